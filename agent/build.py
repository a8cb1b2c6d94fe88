"""One way to build an agent from settings.

``whalebone run``, ``sessions resume``, ``sessions compact``, ``chat`` and the daemon's jobs
all come through :func:`build` / :func:`build_agent` (the chat through :func:`resolve`, since it
keeps the engine and the tools itself, to switch engines and to ask a person about shell
commands). What
each front end adds is an :class:`Overrides`: its flags, a job's options, an engine it already
holds. The order, lowest first: built-in defaults, the settings file, a resumed session's stored
configuration, the overrides.

    settings = load_settings(args.config)
    agent = build_agent(settings, Overrides(engine=args.engine, session_id=sid,
                                            agent={"thinking": "max"}))

:func:`build` also returns what the front end shows or starts around the run: one-line notes
for the person (project instructions taken from ``AGENTS.md``, a project ``.mcp.json`` not
trusted yet) and the session's MCP servers, which :func:`mcp_servers` starts for the block of
a run (once per session, in name order, so the tool list — and the cached prefix — is stable).

Errors: settings that cannot be used raise a :class:`~whalebone.core.errors.WhaleboneError`
(or pydantic's ``ValueError``) before any engine is opened; an engine that cannot be opened
raises :class:`~whalebone.engine.base.EngineError`, last, so that a front end can tell the two
apart (exit codes 2 and 5).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from whalebone.agent.agent import Agent
from whalebone.agent.config import AgentConfig
from whalebone.agent.project import with_instructions
from whalebone.agent.settings import Settings, open_budget, open_engine_spec
from whalebone.agent.store import SessionStore
from whalebone.engine.base import Engine
from whalebone.tools.mcp_config import McpSetup, discover
from whalebone.tools.registry import Tool, ToolRegistry
from whalebone.tools.shell import Approver, ShellPolicy

if TYPE_CHECKING:
    from whalebone.agent.seams import BudgetGuard, Memory


@dataclass
class Overrides:
    """What a front end sets over the settings."""

    engine: str | None = None  # an engine spec, over settings.engine
    model: str | None = None  # the engine option "model" (openai:URL needs one)
    open_engine: Engine | None = None  # an engine already open (the daemon's shared ones)
    store: SessionStore | str | Path | None = None  # over settings.store
    workspace: str | Path | None = None  # over settings.workspace
    agent: Mapping[str, Any] = field(default_factory=dict)  # AgentConfig fields (flags, a job)
    # A session to resume (its id, or a unique prefix of it, which resolve() replaces with the
    # full id): its stored configuration applies.
    session_id: str | None = None
    tools: ToolRegistry | Literal["builtin", "none"] = "builtin"
    allow: Sequence[str] = ()  # shell allow patterns added to the settings'
    approve: Approver | None = None  # answers the shell policy's "ask" (None: refuse)
    memory: str | None = None  # a memory scope, over [memory] scope
    # "settings": the guard every front end gets (opened with the engine, by build());
    # else a guard of the caller's (None: none, for tests of an unguarded agent only).
    budget: BudgetGuard | Literal["settings"] | None = "settings"
    mcp: Sequence[str | Path] = ()  # mcpServers files named by the person (--mcp FILE)


@dataclass
class AgentParts:
    """Everything an agent is made of except its engine."""

    store: SessionStore
    config: AgentConfig
    workspace: Path
    shell_policy: ShellPolicy
    tools: ToolRegistry | None
    budget: BudgetGuard | None
    memory_scope: str | None
    memory_home: str | None
    engine_spec: str
    engine_options: dict[str, Any]
    mcp: McpSetup = field(default_factory=McpSetup)  # the session's MCP servers, not started
    notes: list[str] = field(default_factory=list)  # one line each, for the person

    def memory(self) -> Memory | None:
        """The memory tool over ``memory_scope`` (attached, so opened, only when asked)."""
        if not self.memory_scope:
            return None
        from whalebone.memory import MemoryHome

        return MemoryHome(self.memory_home).attach(self.memory_scope,
                                                   who=f"agent:{self.config.name}")


def agent_config(settings: Settings, store: SessionStore, overrides: Overrides) -> AgentConfig:
    """The settings' [agent] table, under a resumed session's stored configuration, under the
    overrides. Raises ``SessionError`` for an unknown ``session_id``."""
    fields = settings.agent.given()
    if overrides.session_id is not None:
        stored = store.config(overrides.session_id)
        fields.update({k: v for k, v in stored.items() if k in AgentConfig.model_fields})
    fields.update(overrides.agent)
    return AgentConfig.model_validate(fields)


def resolve(settings: Settings, overrides: Overrides | None = None) -> AgentParts:
    """The parts of the agent ``settings`` and ``overrides`` describe; no engine is opened."""
    o = overrides or Overrides()
    if isinstance(o.store, SessionStore):
        store = o.store
    else:
        store = SessionStore(Path(o.store).expanduser() if o.store else settings.store_path)
    if o.session_id is not None:
        o.session_id = store.resolve(o.session_id)  # a unique prefix will do
    workspace = Path(o.workspace).expanduser() if o.workspace else settings.workspace_path
    config, note = with_instructions(agent_config(settings, store, o), workspace,
                                     resumed=o.session_id is not None)
    notes = [note] if note else []
    policy = settings.shell.policy(o.allow)
    if isinstance(o.tools, ToolRegistry):
        tools: ToolRegistry | None = o.tools
    elif o.tools == "builtin":
        from whalebone.agent.tools import default_tools

        tools = default_tools(workspace, shell_policy=policy, approve=o.approve)
    else:
        tools = None
    mcp = discover(settings.home_path, workspace, o.mcp, settings.mcpServers)
    notes += mcp.notes
    # The settings' guard needs the engine (its prices, its auditor): build() opens it.
    budget = None if o.budget == "settings" else o.budget
    options = dict(settings.engine_options) | ({"model": o.model} if o.model else {})
    return AgentParts(store=store, config=config, workspace=workspace, shell_policy=policy,
                      tools=tools, budget=budget,
                      memory_scope=settings.memory.scope if o.memory is None else o.memory,
                      memory_home=settings.memory.home or None,
                      engine_spec=o.engine or settings.engine, engine_options=options,
                      mcp=mcp, notes=notes)


def build(settings: Settings, overrides: Overrides | None = None) -> tuple[Agent, AgentParts]:
    """The agent ``settings`` and ``overrides`` describe, its engine opened last, with the
    parts a front end shows (``notes``) or starts around a run (``mcp``)."""
    o = overrides or Overrides()
    parts = resolve(settings, o)
    # Memory is attached before the engine opens: a settings error is reported first.
    memory = parts.memory()
    engine = o.open_engine if o.open_engine is not None else open_engine_spec(
        parts.engine_spec, parts.engine_options)
    # Always a guard (budget.setup): every call metered, every limit in the ledger enforced.
    budget = open_budget(settings, engine) if o.budget == "settings" else parts.budget
    agent = Agent(engine, tools=parts.tools, store=parts.store, config=parts.config,
                  budget=budget, memory=memory)
    return agent, parts


def build_agent(settings: Settings, overrides: Overrides | None = None) -> Agent:
    """The agent ``settings`` and ``overrides`` describe, its engine opened last."""
    return build(settings, overrides)[0]


@asynccontextmanager
async def mcp_servers(setup: McpSetup, attach: Callable[[list[Tool]], object],
                      say: Callable[[str], object]) -> AsyncIterator[None]:
    """Start the session's MCP servers for the block and ``attach`` their tools (to an agent's
    registry: ``agent.tools.add_many``); a server that does not start is one line through
    ``say``, and the run goes on without it."""
    if not setup.servers:
        yield
        return
    from whalebone.tools.mcp_servers import open_servers

    async with open_servers(setup.servers) as mcp:
        for name, why in sorted(mcp.failures.items()):
            say(f"MCP server {name!r} did not start: {why}")
        attach(list(mcp.tools()))
        yield
