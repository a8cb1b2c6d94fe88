"""What the agent needs from its collaborators, as Protocols.

An engine is typed against :class:`whalebone.engine.base.Engine` (the ABC every engine
implements). A budget guard and a memory are smaller contracts: the agent calls only these
methods, so a host may hand in its own (a test double, a guard of another design) without
subclassing anything. ``whalebone.budget.guard.BudgetGuard`` and
``whalebone.memory.tool.AgentMemory`` are the implementations whalebone ships.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from whalebone.budget.ledger import Actual
    from whalebone.budget.policy import CallPlan, RunFacts
    from whalebone.engine.base import Usage
    from whalebone.tools.registry import Tool


@runtime_checkable
class BudgetGuard(Protocol):
    """Asked before every model call, told after (see :mod:`whalebone.agent.budgeting`)."""

    async def before_call(self, plan: CallPlan, *,
                          facts: Callable[[], RunFacts] | None = None) -> Any:
        """A ticket for the call, or ``BudgetStop`` to refuse it."""
        ...

    def settle(self, ticket: Any, usage: Usage, *, model: str | None = None) -> Actual: ...

    def release(self, ticket: Any) -> None: ...


@runtime_checkable
class Memory(Protocol):
    """Something whose tools join an agent's registry, after the agent's own."""

    def tools(self) -> Iterable[Tool]: ...
