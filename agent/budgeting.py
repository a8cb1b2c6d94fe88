"""The loop's side of the budget guard: ask before every model call, settle after.

Every model call the loop makes (a turn, a retry after malformed output, a compaction summary)
goes through :meth:`BudgetHook.before`, so no call is ever unmetered, and the guard can stop a
run *before* it spends, not after. The guard (``whalebone.budget.guard``) belongs to the budget
room; this module is coded against its agreed contract and imports it lazily, so an agent with
no budget needs nothing from that room.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from whalebone.agent.generate import Generation
from whalebone.agent.seams import BudgetGuard
from whalebone.core.deprecation import renamed
from whalebone.engine.base import Usage

# What the loop meters a call as: "turn" (or the run's own turn kind, e.g. "heartbeat" for a
# scheduled job), "retry" after malformed output, "compaction" for a summary.
CallKind = str


class BudgetHook:
    """Wraps a guard (or nothing) for one run."""

    def __init__(self, guard: BudgetGuard | None, *, run_id: str, session_id: str, agent: str,
                 facts: Callable[[], dict[str, Any]]) -> None:
        self.guard = guard
        self.run_id = run_id
        self.session_id = session_id
        self.agent = agent
        self._facts = facts

    def notice(self) -> str | None:
        """The guard's one-time line for the person running (e.g. the default daily cap of a
        paid engine), once: the guard forgets it when it is taken."""
        note = getattr(self.guard, "notice", None)
        if note:
            self.guard.notice = None
        return note or None

    async def before(self, *, kind: CallKind, model: str, prompt_tokens: int,
                     cached_tokens: int, max_tokens: int) -> Any | None:
        """A ticket for the call; the guard's ``BudgetStop`` (the run stops before spending)
        if it denies it."""
        if self.guard is None:
            return None
        from whalebone.agent.facts import to_run_facts
        from whalebone.budget.guard import CallPlan, RunFacts

        plan = CallPlan(run_id=self.run_id, session_id=self.session_id, agent=self.agent,
                        kind=kind, model=model, prompt_tokens=prompt_tokens,
                        cached_tokens=min(cached_tokens, prompt_tokens),
                        max_tokens=max_tokens)
        return await self.guard.before_call(
            plan, facts=lambda: to_run_facts(self._facts(), RunFacts))

    def settle(self, ticket: Any | None, record: Generation, fallback_model: str) -> None:
        if ticket is not None:
            self.guard.settle(ticket, Usage.of(record), model=record.model or fallback_model)

    def release(self, ticket: Any | None) -> None:
        if ticket is not None:
            self.guard.release(ticket)

    def outcome(self, status: str) -> None:
        """Tell the guard how the run ended (its base rates for later extension requests)."""
        if self.guard is None or not hasattr(self.guard, "record_outcome"):
            return
        outcome = {"done": "finished", "budget": "budget", "error": "failed"}.get(status,
                                                                                 "stopped")
        self.guard.record_outcome(self.run_id, session_id=self.session_id, agent=self.agent,
                                  outcome=outcome)


# BudgetStopped wrapped the guard's BudgetStop in a second exception with the same meaning; a
# run now stops with the guard's own (its scope, limit and verdict included).
__getattr__ = renamed(__name__, {"BudgetStopped": "whalebone.budget.guard:BudgetStop"})
