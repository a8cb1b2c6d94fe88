"""What a chat drives: an agent over a session store, the engines it may switch between, the
shell tool whose ``ask`` policy goes to a person, and the price of each call.

No widget lives here, so the app stays a composition of widgets and this logic can be driven
without a screen.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whalebone.agent import Agent, AgentConfig, AgentEvent, Compacted, SessionStore
from whalebone.engine.prices import PriceTable
from whalebone.tools.mcp_config import McpSetup
from whalebone.tools.redact import redact
from whalebone.tools.registry import Tool, ToolError, ToolRegistry
from whalebone.tools.shell import ShellPolicy, run_shell
from whalebone.tui.approvals import ApprovalLog, ApprovalRecord, Decision
from whalebone.tui.engines import ChatEngineError, open_chat_engine
from whalebone.tui.permissions import Permissions

if TYPE_CHECKING:  # the budget and memory rooms are imported only when a chat uses them
    from whalebone.budget.guard import BudgetGuard
    from whalebone.budget.ledger import Ledger
    from whalebone.engine.base import Engine
    from whalebone.memory.home import MemoryHome

AskPerson = Callable[[str], Awaitable[Decision]]
THINKING_MODES = ("chat", "thinking", "max")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class ChatRunner:
    """The non-visual half of the chat."""

    def __init__(
        self,
        store: SessionStore,
        *,
        engine: Engine | None = None,
        engine_specs: list[str] | None = None,
        config: AgentConfig | None = None,
        workspace: str | Path = ".",
        shell_policy: ShellPolicy | None = None,
        approvals: ApprovalLog | None = None,
        permissions: Permissions | None = None,
        ledger: Ledger | None = None,
        guard: BudgetGuard | None = None,
        scopes: list[str] | None = None,
        prices: PriceTable | None = None,
        memory_home: MemoryHome | None = None,
        jobs_db: Path | None = None,
        open_engine: Callable[[str], Any] = open_chat_engine,
    ) -> None:
        self.store = store
        self.engine_specs = list(engine_specs or [])
        self._open_engine = open_engine
        if engine is None:
            if not self.engine_specs:
                raise ChatEngineError("a chat needs an engine or an engine spec")
            engine = open_engine(self.engine_specs[0])
        self.engine = engine
        self.engine_spec = self.engine_specs[0] if self.engine_specs else engine.name
        self.config = config or AgentConfig()
        self.workspace = Path(workspace)
        self.shell_policy = shell_policy or ShellPolicy()
        self.configured_allow = list(self.shell_policy.allow)  # from the config and flags
        self.permissions = permissions
        self._unsaved: list[str] = []  # allowed always without a permissions file
        self._set_allow()
        self.approvals = approvals
        self.guard = guard  # a budget.guard.BudgetGuard: asked before every model call
        self.ledger = ledger if ledger is not None else getattr(guard, "ledger", None)
        self.scopes = list(scopes or [])
        self.prices = prices or PriceTable()
        self.ask_person: AskPerson | None = None  # set by the app: opens the approval modal
        self.session_id: str | None = None
        self.memory_home = memory_home
        self.jobs_db = jobs_db  # the daemon's job queue: its sessions are listed apart
        self.memory_scope: str | None = None
        self._memory_tools: list[Any] = []
        self._mcp_tools: list[Tool] = []
        self.mcp_setup: Any = McpSetup()  # the chat's MCP servers, started around the app
        self.tools = self.build_tools()
        self._book: Any | None = None

    # --- tools ---------------------------------------------------------------------------------

    def build_tools(self) -> ToolRegistry:
        """``whalebone run``'s built-in tools, in its order and with its schemas (so a session
        moves between the two with the same tool list), except that the shell's ``ask`` goes to
        the person in the chat, whose reason for a denial reaches the model; then the memory
        tool, if a scope is attached, and the MCP servers' tools."""
        from whalebone.agent.tools import default_tools

        tools = ToolRegistry()
        for tool in default_tools(self.workspace, shell_policy=self.shell_policy):
            if tool.name == "shell":
                tool = Tool(self.shell, name="shell", description=tool.description,
                            timeout=tool.timeout)
            tools.add(tool)
        for tool in [*self._memory_tools, *self._mcp_tools]:
            tools.add(tool)
        return tools

    def attach_mcp(self, tools: list[Any]) -> None:
        """Give sessions created from now on the tools of the MCP servers the chat started
        (after the built-in and memory tools, in the servers' name order)."""
        self._mcp_tools = list(tools)
        self.tools = self.build_tools()


    async def shell(self, command: str) -> str:
        """Run a shell command in the workspace and return its exit code and output.
        Commands outside the allow list wait for a person's approval."""
        decision: Decision | None = None

        async def approve(cmd: str) -> bool:
            nonlocal decision
            decision = await self.decide_shell(cmd)
            return decision.approved

        try:
            return await run_shell(command, self.workspace.expanduser(), self.shell_policy,
                                   approve)
        except ToolError:
            if decision is not None and not decision.approved:
                why = f": {decision.reason}" if decision.reason else ""
                raise ToolError(f"a person denied the command {command[:200]!r}{why}"
                                ) from None
            raise

    async def decide_shell(self, command: str) -> Decision:
        """Ask the person (no one to ask means no), and log the answer before acting on it."""
        if self.ask_person is None:
            decision = Decision(approved=False, reason="no one is there to approve it")
        else:
            decision = await self.ask_person(command)
        self.log("shell", command, decision)
        if decision.approved and decision.always:
            self.allow_always(decision.always)
        return decision

    # --- allow-always patterns ----------------------------------------------------------

    def allow_always(self, pattern: str) -> bool:
        """Let commands matching ``pattern`` run without asking, in this chat and later ones
        (in this chat only, without a permissions file)."""
        if self.permissions is None:
            added = pattern not in self.shell_policy.allow
            self._unsaved.append(pattern)
        else:
            added = self.permissions.add(pattern)
        self._set_allow()
        return added

    def revoke(self, pattern: str) -> bool:
        """Ask again about commands matching ``pattern`` (an allow-always one)."""
        removed = pattern in self._unsaved
        self._unsaved = [p for p in self._unsaved if p != pattern]
        if self.permissions is not None:
            removed = self.permissions.remove(pattern) or removed
        self._set_allow()
        return removed

    def always_allowed(self) -> list[str]:
        """The allow-always patterns, saved ones first."""
        saved = self.permissions.patterns() if self.permissions is not None else []
        return list(dict.fromkeys([*saved, *self._unsaved]))

    def _set_allow(self) -> None:
        allow = list(dict.fromkeys([*self.configured_allow, *self.always_allowed()]))
        self.shell_policy = self.shell_policy.model_copy(update={"allow": allow})

    def log(self, kind: Any, subject: str, decision: Decision,
            session: str | None = None) -> None:
        if self.approvals is not None:
            self.approvals.append(ApprovalRecord(
                kind=kind, subject=redact(subject), approved=decision.approved,
                reason=decision.reason,
                amount=decision.amount, session=session or self.session_id or ""))

    # --- engine, mode, price ---------------------------------------------------------------

    async def switch_engine(self, spec: str) -> None:
        """Open ``spec`` and make it the engine of the next turn (the old one is closed)."""
        engine = self._open_engine(spec)
        old, self.engine, self.engine_spec = self.engine, engine, spec
        if spec not in self.engine_specs:
            self.engine_specs.append(spec)
        if old is not engine:
            await old.aclose()

    def set_thinking(self, mode: str) -> None:
        if mode not in THINKING_MODES:
            raise ChatEngineError(f"unknown thinking mode {mode!r} (known: "
                                  f"{', '.join(THINKING_MODES)})")
        self.config = self.config.model_copy(update={"thinking": mode})

    def scope_states(self) -> list[Any]:
        """The budget scopes the status bar shows: those named on the command line, else every
        capped scope this chat spends from (this session's, this agent's and everyone's today,
        and undated ones such as a project's); other sessions' and single runs' are left out."""
        if self.ledger is None:
            return []
        if self.scopes:
            return [self.ledger.state(s) for s in self.scopes]
        today = dt.datetime.now(dt.UTC).date().isoformat()
        states = []
        for name in self.ledger.scopes():
            kind, _, rest = name.partition(":")
            if kind == "run" or (kind == "session" and rest != self.session_id):
                continue
            head, _, last = name.rpartition(":")
            if head and _DAY.fullmatch(last) and last != today:
                continue
            state = self.ledger.state(name)
            if state.max_usd is not None or state.max_tokens is not None:
                states.append(state)
        return states

    # --- a turn ----------------------------------------------------------------------------

    def agent(self) -> Agent:
        return Agent(self.engine, tools=self.tools, store=self.store, config=self.config,
                     prices=self.prices, budget=self.guard)

    def new_session(self, title: str = "") -> str:
        self.session_id = self.store.create(title=title[:80], agent=self.config.name,
                                            config=self.config.model_dump(mode="json"))
        return self.session_id

    async def turn(self, text: str) -> AsyncIterator[AgentEvent]:
        """Send ``text`` to the current session (a new one if none) and stream the run."""
        title = (text.strip().splitlines() or [""])[0]
        if self.session_id is None:
            self.new_session(title)
        elif not self.store.info(self.session_id).title:
            self.store.rename(self.session_id, title[:80])
        # Closed explicitly, so a cancelled turn releases the session at once (not whenever the
        # garbage collector finalises the generator).
        async with aclosing(self.agent().stream(text, session_id=self.session_id)) as events:
            async for event in events:
                yield event

    # --- budget extensions awaiting a person ------------------------------------------------

    def pending_extensions(self) -> list[Any]:
        """Extension requests of any session that wait for a decision (the guard of a frozen
        run, here or in another process, is polling the ledger for one)."""
        book = self._decision_book()
        return [] if book is None else book.pending()

    def decide_extension(self, request: Any, decision: Decision) -> bool:
        """Record a person's decision on a pending request. False if another decider (the
        auditor, another person) got there first; the decision is logged either way."""
        from whalebone.budget.guard import clamp_amount
        from whalebone.budget.policy import Verdict

        book = self._decision_book()
        if book is None:
            raise ChatEngineError("no budget ledger is open")
        amount = clamp_amount(decision.amount, request.max_step) if decision.approved else 0.0
        verdict = Verdict(decision="approve" if decision.approved else "deny", amount=amount,
                          reason=decision.reason or "(no reason given)", decider="human")
        applied = book.resolve(request.id, verdict)
        self.log("budget", f"{request.scope} +{amount:g} {request.unit} "
                 f"(request {request.id})", decision.model_copy(update={"amount": amount}),
                 session=request.session_id)
        return applied

    def extension_outcome(self, request: Any) -> str:
        """One line on how a request was decided (by the auditor, or a person elsewhere), and
        how a person here overrides it."""
        book = self._decision_book()
        decided = None if book is None else book.applied_decision(request.id)
        if decided is None:
            return f"The request for {request.scope} is no longer pending."
        line = (f"Budget {request.scope}: {decided.decider} {decided.decision}d "
                f"({decided.cause}): {decided.reason}"[:300])
        if decided.decision == "deny":
            line += (f". To override: /budget {request.scope} "
                     f"{'usd' if request.unit == 'usd' else 'tokens'} N, then continue")
        return line

    def set_limit(self, scope: str, *, usd: float | None, tokens: int | None) -> tuple[str, Any]:
        """A person's limit from the chat, written as ``whalebone budget set`` writes it (a
        logged decision), so it applies to every front end at its next call."""
        book = self._decision_book()
        if book is None:
            raise ChatEngineError("no budget ledger is open")
        written, limit, _family = book.set_limit(scope, usd=usd, tokens=tokens,
                                                 decider="human:chat", reason="/budget")
        return written, limit

    def _decision_book(self) -> Any | None:
        if self.ledger is None:
            return None
        if self._book is None:
            from whalebone.budget.records import DecisionBook

            self._book = DecisionBook(self.ledger)
        return self._book

    # --- memory and compaction -------------------------------------------------------------

    def attach_memory(self, scope: str) -> None:
        """Give sessions created from now on the ``memory`` tool over ``scope``. A session's
        tool list is fixed when it starts (it is part of the cached prompt prefix), so a
        running session keeps the tools it was started with."""
        from whalebone.memory import MemoryHome

        home = self.memory_home if self.memory_home is not None else MemoryHome()
        memory = home.attach(scope, who=f"agent:{self.config.name}")
        self.memory_home, self.memory_scope = home, scope
        self._memory_tools = list(memory.tools())
        self.tools = self.build_tools()

    @property
    def can_compact(self) -> bool:
        """Whether there is a session to compact on demand (the agent also compacts by itself
        as a session nears the context window)."""
        return self.session_id is not None

    async def compact(self) -> Compacted:
        """Compact the current session now: older turns become a summary the model writes on
        the cached prompt (``Agent.compact``, metered by the budget guard like any call)."""
        if self.session_id is None:
            raise ChatEngineError("no session is open to compact")
        return await self.agent().compact(self.session_id)
