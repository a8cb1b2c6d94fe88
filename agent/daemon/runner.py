"""Running one job: its session, its engine, its tools, its budget, its events and its log.

A job's run is the agent's own ``stream``; the runner only decides where it stops. Every step
the agent commits before the next :class:`StepStarted`, so that event is a checkpoint: when the
daemon is draining (SIGTERM) the runner stops there and hands the job back to the queue, and the
next start resumes the session with nothing lost and nothing repeated. Cancelling a job cancels
its run outright (the agent's store keeps whatever was committed).
"""

from __future__ import annotations

import importlib
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import anyio

from whalebone.agent.build import Overrides, build, mcp_servers
from whalebone.agent.daemon.config import DaemonConfig, ScheduleConfig
from whalebone.agent.daemon.engines import Engines
from whalebone.agent.daemon.jobs import STATUS_OF_REASON, Job, JobQueue
from whalebone.agent.events import AnswerText, Done, Reasoning, StepStarted, UsageReport
from whalebone.agent.store import SessionBusy, SessionError, SessionStore
from whalebone.core.errors import WhaleboneError
from whalebone.engine.base import Engine, EngineError
from whalebone.tools.mcp import McpUnavailable
from whalebone.tools.mcp_config import McpSetup
from whalebone.tools.registry import ToolRegistry


@dataclass
class Running:
    """A job being run, as the daemon sees it."""

    job: Job
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    step: int = 0
    stopping: bool = False  # stop at the next checkpoint (draining)


class JobRunner:
    """Runs jobs with the daemon's current configuration (replaced on SIGHUP)."""

    def __init__(self, config: DaemonConfig, queue: JobQueue, store: SessionStore,
                 engines: Engines, log: Any) -> None:
        self.config = config
        self.queue = queue
        self.store = store
        self.engines = engines
        self.log = log
        self._guards: dict[str, Any] = {}

    def reconfigure(self, config: DaemonConfig) -> None:
        self.config = config
        self._guards.clear()

    # --- what a job runs with ---------------------------------------------------------------

    def _tools(self) -> ToolRegistry | Literal["builtin", "none"]:
        """The config's tools. For "builtin", nobody is watching a daemon: a command the shell
        policy says to "ask" about is refused (build_agent's approve=None)."""
        kind = self.config.tools
        if kind in ("builtin", "none"):
            return "builtin" if kind == "builtin" else "none"
        module, _, name = kind.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise WhaleboneError(f"tools = {kind!r} cannot be loaded: {e}") from None
        tools = factory(self.config.workspace_path)
        return tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)

    async def _guard(self, schedule: ScheduleConfig | None, engine: Engine, spec: str) -> Any:
        """The budget guard for a job (always one: :func:`whalebone.budget.setup.open_guard`,
        as for every front end), plus the schedule's own scopes. ``[budget] auditor = SPEC``
        has that engine decide extensions; by default the engine's cheapest sibling or the
        bundled model does; with none, a job at its cap is denied unless ``on_cap = "human"``
        (a person then decides through the API or ``whalebone budget``)."""
        budget: dict[str, Any] = dict(self.config.budget.model_extra or {})  # the policy's keys
        auditor_spec = self.config.budget.auditor
        if auditor_spec is not None:
            budget["auditor"] = auditor_spec
        budget["ledger"] = str(self.config.ledger_path)
        limited = schedule is not None and any(
            v is not None for v in (schedule.budget_usd, schedule.budget_tokens,
                                    schedule.day_usd, schedule.day_tokens))
        from whalebone.budget.ledger import Limit, day_scope
        from whalebone.budget.setup import open_guard

        key = f"{schedule.name if schedule is not None and limited else ''}\0{spec}"
        guard = self._guards.get(key)
        if guard is None:
            if auditor_spec and auditor_spec not in ("rule", "none"):
                await self.engines.open(auditor_spec, {})  # loaded off the event loop, cached
            guard = open_guard(engine, budget,
                               open_engine=lambda name: self.engines.get(name, {}))
            if guard.notice:
                self.log("budget_default", level="warning", message=guard.notice)
                guard.notice = None
            if schedule is not None and limited:
                extra = (*guard.policy.extra_scopes, f"schedule:{schedule.name}")
                guard.policy = guard.policy.model_copy(update={"extra_scopes": extra})
            self._guards[key] = guard
        if schedule is not None and limited:
            ledger = guard.ledger
            # A limit set by a person or raised by an extension is kept (ensure, not set).
            ledger.ensure_limit(Limit(scope=f"schedule:{schedule.name}",
                                      max_usd=schedule.budget_usd,
                                      max_tokens=schedule.budget_tokens))
            day = day_scope(f"schedule:{schedule.name}")
            ledger.ensure_limit(Limit(scope=day, max_usd=schedule.day_usd,
                                      max_tokens=schedule.day_tokens))
            scopes = tuple(s for s in guard.policy.extra_scopes
                           if not s.startswith(f"schedule:{schedule.name}:"))
            if schedule.day_usd is not None or schedule.day_tokens is not None:
                scopes = (*scopes, day)
            guard.policy = guard.policy.model_copy(update={"extra_scopes": scopes})
        return guard

    def _overrides(self, job: Job, **more: Any) -> Overrides:
        """What a job sets over the daemon's settings: its options (AgentConfig fields) and
        the daemon's store (the [memory] table applies as it does to ``whalebone run``)."""
        return Overrides(agent=job.options, store=self.store, **more)

    # --- running ----------------------------------------------------------------------------

    async def run(self, running: Running) -> None:
        job = running.job
        started = time.monotonic()
        self.log("job_started", job=job.id, session=job.session_id or None,
                 attempt=job.attempts, schedule=job.schedule or None)
        try:
            status, reason, message, answer, steps = await self._run(running)
        except Exception as e:  # a job must never take the daemon down with it
            status, reason, message, answer, steps = ("failed", "error",
                                                      f"{type(e).__name__}: {e}", "", 0)
        job_now = self.queue.get(job.id)
        self.queue.finish(job.id, status, reason=reason, message=message, answer=answer,
                          steps=steps)
        if status == "budget" and job.schedule:
            self.queue.stop_schedule(job.schedule, message)
            self.log("schedule_stopped", level="warning", schedule=job.schedule, job=job.id,
                     message=message)
        self.log("job_finished", level="info" if status in ("done", "queued") else "warning",
                 job=job.id, session=job_now.session_id or None, status=status, reason=reason,
                 message=message or None, steps=steps, prompt_tokens=job_now.prompt_tokens,
                 cache_hit_tokens=job_now.cache_hit_tokens,
                 completion_tokens=job_now.completion_tokens, price=round(job_now.price, 9),
                 seconds=round(time.monotonic() - started, 3))

    async def _run(self, running: Running) -> tuple[Any, str, str, str, int]:
        job = running.job
        schedule = self.config.schedule_named(job.schedule) if job.schedule else None
        spec = job.engine or (schedule.engine if schedule and schedule.engine else "") \
            or self.config.engine
        if not self.config.allows_engine(spec):
            return ("failed", "engine_not_allowed", f"the engine {spec!r} is not among the "
                    "daemon's engines (engine, engines = [...] in its config)", "", 0)
        try:
            engine = await self.engines.open(spec, self.config.engine_options)
        except (EngineError, WhaleboneError) as e:
            return "failed", "no_engine", f"cannot open the engine {spec!r}: {e}", "", 0
        try:
            guard = await self._guard(schedule, engine, spec)
            agent, built = build(self.config, self._overrides(
                job, open_engine=engine, tools=self._tools(), budget=guard))
        except EngineError as e:
            return "failed", "no_engine", f"cannot open the auditor's engine: {e}", "", 0
        except (WhaleboneError, ValueError) as e:
            return "failed", "bad_config", str(e), "", 0
        config = agent.config
        for note in built.notes:
            self.log("note", job=job.id, message=note)
        sid = job.session_id
        if not sid:  # committed to the job before the first step: a restart resumes it
            title = job.task.strip().splitlines()[0][:80]
            sid = self.store.create(title=title, agent=config.name,
                                    config=config.model_dump(mode="json"))
            self.queue.set_session(job.id, sid)
            job.session_id = sid
        try:
            stored = self.store.messages(sid)
        except SessionError as e:
            return "failed", "no_session", str(e), "", 0
        has_task = any(m.get("role") == "user" for m in stored)
        # A job's steps are its session's model turns, counted across restarts: a run numbers
        # its own steps from 1, so its events and totals start after the turns already made.
        before = sum(1 for m in stored if m.get("role") == "assistant")
        task = None if has_task else job.task
        done: Done | None = None
        # Deltas are coalesced: one reasoning and one text event per model call, not one
        # database row per few characters.
        deltas: dict[str, list[str]] = {"reasoning": [], "text": []}
        with running.scope:
            try:
                # A scheduled job's model calls are metered as heartbeats, not as turns.
                turn_kind = "heartbeat" if job.schedule else "turn"
                # Each job runs the MCP servers for its own life (none without tools).
                mcp = built.mcp if self.config.tools != "none" else McpSetup()
                say = partial(self.log, "mcp_unavailable", level="warning", job=job.id)
                async with mcp_servers(mcp, agent.tools.add_many,
                                       lambda line: say(message=line)), \
                        aclosing(agent.stream(task, session_id=sid,
                                              turn_kind=turn_kind)) as events:
                    async for event in events:
                        if isinstance(event, AnswerText | Reasoning):
                            deltas[event.type].append(event.text)
                            continue
                        for kind, parts in deltas.items():
                            if parts:
                                self.queue.add_event(job.id, {"type": kind,
                                                              "text": "".join(parts)})
                                parts.clear()
                        data = event.model_dump(mode="json")
                        if isinstance(event, StepStarted):
                            data["step"] += before
                        elif isinstance(event, Done):
                            data["steps"] += before
                        self.queue.add_event(job.id, data)
                        if isinstance(event, StepStarted):
                            running.step = event.step
                            if running.stopping:
                                break  # a checkpoint: every earlier step is committed
                        elif isinstance(event, UsageReport):
                            self._usage(job, before + running.step, event)
                        elif isinstance(event, Done):
                            done = event
            except SessionBusy as e:  # a person resuming it by hand, say: never interleave
                return "failed", "busy", str(e), "", 0
            except SessionError as e:  # deleted under the job
                return "failed", "no_session", str(e), "", 0
            except McpUnavailable as e:  # a server marked required = true
                return "failed", "bad_config", str(e), "", 0
        if done is None:
            steps = before + max(0, running.step - 1)
            if running.stopping:
                return "queued", "interrupted", "stopped at a checkpoint by a shutdown; " \
                    "resumes on restart", "", steps
            return "cancelled", "cancelled", "cancelled while running", "", steps
        if done.message and done.reason == "error":
            self.log("job_error", level="error", job=job.id, session=sid,
                     message=done.message)
        answer = done.answer
        if done.reason == "answer" and not answer:
            # The run had already answered before a restart: the answer is the session's last.
            answer = next((str(m.get("content") or "") for m in reversed(
                self.store.messages(sid)) if m.get("role") == "assistant"), "")
        return (STATUS_OF_REASON.get(done.reason, "failed"), done.reason, done.message,
                answer, before + done.steps)

    def _usage(self, job: Job, step: int, u: UsageReport) -> None:
        self.queue.add_usage(job.id, prompt_tokens=u.prompt_tokens,
                             cache_hit_tokens=u.cache_hit_tokens,
                             completion_tokens=u.completion_tokens, price=u.price)
        self.log("model_call", job=job.id, session=job.session_id, step=step, kind=u.kind,
                 model=u.model, prompt_tokens=u.prompt_tokens,
                 cache_hit_tokens=u.cache_hit_tokens, cache_miss_tokens=u.cache_miss_tokens,
                 completion_tokens=u.completion_tokens, hit_rate=round(u.hit_rate, 4),
                 price=round(u.price, 9), schedule=job.schedule or None)
