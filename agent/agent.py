"""The embedding API: an :class:`Agent` is an engine, tools, a session store, an optional
budget guard and memory, and a configuration.

    agent = Agent(engine, tools=registry, store="~/.whalebone/sessions.db")
    done = await agent.run("fix the failing test")           # to the end
    async for event in agent.stream("…"):                    # typed events as they happen
        ...
    done = await agent.resume(done.session_id, "now add a changelog entry")
    done = agent.run_sync("…")                               # for scripts
    report = await agent.compact(done.session_id)            # older turns → a summary, now

A session holds the conversation; a run continues it. Runs of one session never interleave (the
store's writer lock), and a run killed at any point resumes from what was committed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from whalebone.agent.config import AgentConfig, ThinkingMode
from whalebone.agent.events import AgentEvent, Compacted, Done
from whalebone.agent.seams import BudgetGuard, Memory
from whalebone.agent.store import SessionStore
from whalebone.core.errors import WhaleboneError
from whalebone.engine.base import Engine
from whalebone.engine.prices import PriceTable
from whalebone.tools.registry import Tool, ToolRegistry

PriceFn = Callable[[Mapping[str, int]], float]


class AgentError(WhaleboneError):
    """A run that cannot start as asked (a task that is not text, a bad per-run option)."""


class Agent:
    """An agent: an engine, tools, a session store and a configuration.

    ``engine`` is an :class:`~whalebone.engine.base.Engine`; ``budget`` a
    :class:`~whalebone.agent.seams.BudgetGuard` (``whalebone.budget.guard.BudgetGuard``,
    asked before every model call); ``memory`` a :class:`~whalebone.agent.seams.Memory`
    (anything with a ``tools()`` method: its tools join the registry, after the agent's own, so
    the tool list stays in a fixed order); ``system`` is a jinja2 template for the system prompt
    (``{{ name }}`` and ``config.variables`` are in scope).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        tools: ToolRegistry | Iterable[Tool | Callable[..., Any]] | None = None,
        store: SessionStore | str | os.PathLike[str] | None = None,
        config: AgentConfig | None = None,
        system: str | None = None,
        budget: BudgetGuard | None = None,
        memory: Memory | None = None,
        prices: PriceTable | None = None,
        price: PriceFn | None = None,
    ) -> None:
        self.engine = engine
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools or ())
        if memory is not None and hasattr(memory, "tools"):  # duck-typed: see seams.Memory
            for tool in memory.tools():
                self.tools.add(tool)
        if isinstance(store, SessionStore):
            self.store = store
        else:
            self.store = SessionStore(Path(store).expanduser() if store else ":memory:")
        self.config = config or AgentConfig()
        if system is not None:
            self.config = self.config.model_copy(update={"system": system})
        self.budget = budget
        self.memory = memory
        self.prices = _PriceFnTable(price) if price is not None else (prices or PriceTable())

    async def run(self, task: str | None = None, *, session_id: str | None = None,
                  thinking: ThinkingMode | None = None, max_steps: int | None = None,
                  turn_kind: str = "turn") -> Done:
        """Run to the end and return the final :class:`Done`."""
        done: Done | None = None
        async with aclosing(self.stream(task, session_id=session_id, thinking=thinking,
                                        max_steps=max_steps, turn_kind=turn_kind)) as events:
            async for event in events:
                if isinstance(event, Done):
                    done = event
        assert done is not None  # every run ends with exactly one Done
        return done

    async def resume(self, session_id: str, task: str | None = None, **options: Any) -> Done:
        """Continue a session (after a stop, a crash or a cancellation), with an optional new
        user message."""
        return await self.run(task, session_id=session_id, **options)

    def run_sync(self, task: str | None = None, **options: Any) -> Done:
        """:meth:`run` for scripts with no event loop of their own."""
        return anyio.run(lambda: self.run(task, **options))

    async def stream(self, task: str | None = None, *, session_id: str | None = None,
                     thinking: ThinkingMode | None = None, max_steps: int | None = None,
                     turn_kind: str = "turn") -> AsyncIterator[AgentEvent]:
        """Run until an answer or a stop, yielding events. A new session unless ``session_id``
        names one to resume; ``task`` (if given) is appended as the next user message.
        ``thinking`` and ``max_steps`` override the configuration for this run only.
        ``turn_kind`` is the kind this run's turns are metered as (the daemon's scheduled jobs
        run as "heartbeat"); retries and compactions keep their own kinds."""
        from whalebone.agent.loop import Run

        if task is not None and not isinstance(task, str):
            raise AgentError(f"a task is text, not {type(task).__name__}")
        if turn_kind != "turn":
            import re

            from whalebone.budget.policy import KIND_PATTERN  # what the guard's CallPlan takes

            if not isinstance(turn_kind, str) or not re.match(KIND_PATTERN, turn_kind):
                raise AgentError(f"turn_kind {turn_kind!r}: a short lowercase identifier "
                                 "such as 'turn' or 'heartbeat'")
        config = self.config
        updates = {k: v for k, v in (("thinking", thinking), ("max_steps", max_steps))
                   if v is not None}
        if updates:
            try:
                config = AgentConfig.model_validate({**config.model_dump(), **updates})
            except ValidationError as e:
                raise AgentError(f"invalid options for this run: {e}") from None
        if session_id is None:
            title = (task or "").strip().splitlines()[0][:80] if (task or "").strip() else ""
            session_id = self.store.create(title=title, agent=config.name,
                                           config=config.model_dump(mode="json"), task=task)
        with self.store.open(session_id) as session:
            # Closed before the session is: a consumer that stops early (a cancelled step)
            # must not leave the run to be finalised after its session lock is gone.
            run = Run(self, session, config, turn_kind=turn_kind)
            async with aclosing(run.go(task)) as events:
                async for event in events:
                    yield event


    async def compact(self, session_id: str, *, keep_recent: int | None = None) -> Compacted:
        """Compact a session now, between runs: its older turns become a summary the model
        writes on the cached prompt, the last ``keep_recent`` assistant turns (default:
        ``config.keep_recent``) stay verbatim, and a later run continues from the result. The
        same compaction a run makes near the context window, metered the same way.

        Raises :class:`~whalebone.agent.store.SessionError` for an unknown session,
        :class:`~whalebone.agent.store.SessionBusy` while a run writes it,
        :class:`~whalebone.agent.compaction.NothingToCompact` when it is too short (or was
        interrupted mid-call), :class:`~whalebone.agent.compaction.CompactionFailed` when no
        summary could be had, and ``whalebone.budget.guard.BudgetStop`` when the guard refuses
        the summary call;
        in every case the session is left as it was.
        """
        from whalebone.agent import compaction as C
        from whalebone.agent.loop import Run

        keep = self.config.keep_recent if keep_recent is None else keep_recent
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise AgentError(f"keep_recent is a whole number of turns, at least 1, not {keep!r}")
        with self.store.open(session_id) as session:
            config = _as_rendered(self.config, self.store.config(session_id))
            return await C.on_demand(Run(self, session, config), keep)

    def compact_sync(self, session_id: str, *, keep_recent: int | None = None) -> Compacted:
        """:meth:`compact` for scripts with no event loop of their own."""
        return anyio.run(lambda: self.compact(session_id, keep_recent=keep_recent))


def _as_rendered(config: AgentConfig, stored: dict[str, Any]) -> AgentConfig:
    """``config`` in the thinking mode the session was last rendered in: a compaction must
    render the session as its last turn did, or the summary call misses the cache (and the
    session's rendering is for its runs to change, not for a compaction)."""
    rendered = stored.get("rendered_as")
    if not isinstance(rendered, dict):
        return config
    mode = rendered.get("mode")
    thinking = "chat" if mode == "chat" else "max" if rendered.get("effort") == "max" \
        else "thinking"
    return config.model_copy(update={"thinking": thinking})


class _PriceFnTable(PriceTable):
    """A caller's pricing function, in the place of a price table."""

    def __init__(self, fn: PriceFn) -> None:
        super().__init__([])
        self._fn = fn

    def cost(self, model: str, *, cache_hit_tokens: int, cache_miss_tokens: int,
             completion_tokens: int, **_: Any) -> float:
        return self._fn({"cache_hit_tokens": cache_hit_tokens,
                         "cache_miss_tokens": cache_miss_tokens,
                         "completion_tokens": completion_tokens,
                         "prompt_tokens": cache_hit_tokens + cache_miss_tokens})
