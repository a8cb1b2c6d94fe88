"""Settings for the ``whalebone`` command: a TOML file, environment variables and flags.

Precedence, highest first: command-line flags, environment (``WHALEBONE_ENGINE``,
``WHALEBONE_HOME``; engines read their own: ``DEEPSEEK_API_KEY``, ``DEEPSEEK_BASE_URL``, …), the
TOML file (``--config PATH``, else ``$WHALEBONE_HOME/config.toml``, else
``~/.whalebone/config.toml``), built-in defaults (the bundled engine). A config file::

    engine = "deepseek:deepseek-v4-flash"     # any spec open_engine() takes
    store = "~/.whalebone/sessions.db"
    workspace = "."

    [agent]                                     # AgentConfig fields
    thinking = "thinking"
    max_steps = 80

    [shell]                                     # ShellPolicy fields
    allow = ["ls *", "git status", "pytest*"]

    [budget]                                    # BudgetPolicy fields, plus the ledger file
    ledger = "~/.whalebone/budget.db"           # the default; every run is metered in it
    run_usd = 0.50
    auditor = "deepseek:deepseek-v4-flash"      # who decides at a cap; "rule"; "none"

    [memory]                                    # the memory tool's default scope
    scope = "project:whalebone"

    [mcpServers.git]                            # MCP servers (also: mcp.json beside this
    command = "mcp-server-git"                  # file, a trusted project .mcp.json, --mcp)

Every table is a typed model that refuses an unknown key, naming the one it likely was; the
daemon's configuration (:mod:`whalebone.agent.daemon.config`) extends the same models, and
:func:`whalebone.agent.build.build_agent` turns either into an agent.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from whalebone.agent.config import AgentConfig
from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home
from whalebone.core.strict import StrictModel
from whalebone.engine.base import Engine
from whalebone.tools.mcp_servers import McpConfigError, McpServerConfig, load_servers
from whalebone.tools.shell import ShellPolicy

if TYPE_CHECKING:
    from whalebone.budget.guard import BudgetGuard
    from whalebone.budget.policy import BudgetPolicy


class SettingsError(WhaleboneError):
    """A config file or flag that cannot be used."""


class AgentSettings(StrictModel, AgentConfig):
    """``[agent]``: :class:`AgentConfig` fields. Only the keys written here override a resumed
    session's stored configuration (:meth:`given`)."""

    what: ClassVar[str] = "[agent]"

    def given(self) -> dict[str, Any]:
        """The fields the file set, by name (the rest are defaults, not choices)."""
        return self.model_dump(include=self.model_fields_set)


class ShellSettings(StrictModel, ShellPolicy):
    """``[shell]``: :class:`ShellPolicy` fields."""

    what: ClassVar[str] = "[shell]"

    def policy(self, allow: Sequence[str] = ()) -> ShellPolicy:
        """The policy, with ``allow`` patterns (a front end's flags) added to the file's."""
        return ShellPolicy.model_validate({**self.model_dump(),
                                           "allow": [*self.allow, *allow]})


class BudgetSettings(StrictModel):
    """``[budget]``: the ledger file, an auditor engine (the daemon's), and
    :class:`~whalebone.budget.policy.BudgetPolicy` fields, checked when the file is read."""

    model_config = ConfigDict(extra="allow")  # the policy's keys, checked by _policy_keys
    what: ClassVar[str] = "[budget]"

    ledger: str = ""  # default: HOME/budget.db
    auditor: str | None = None  # an engine spec: it decides extension requests (the daemon)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        return data  # the policy's own check names the likely key (_policy_keys)

    @model_validator(mode="after")
    def _policy_keys(self) -> BudgetSettings:
        if self.auditor is not None and not self.auditor:
            raise ValueError("[budget] auditor must be an engine spec")
        self.policy()  # unknown or bad limits are refused now, not when a run starts
        return self

    @property
    def configured(self) -> bool:
        """Whether the file has a [budget] table with anything in it."""
        return bool(self.model_fields_set or self.model_extra)

    def policy(self, **updates: Any) -> BudgetPolicy:
        from whalebone.budget.policy import BudgetPolicy

        return BudgetPolicy.model_validate({**(self.model_extra or {}), **updates})

    def ledger_path(self, home_folder: Path | None = None) -> Path:
        return Path(self.ledger).expanduser() if self.ledger else \
            (home_folder or home()) / "budget.db"


class MemorySettings(StrictModel):
    """``[memory]``: where memory lives and the scope an agent gets by default."""

    what: ClassVar[str] = "[memory]"

    home: str = ""  # default: HOME (memory lives in HOME/memory)
    scope: str | None = None  # e.g. "project:whalebone"; --memory overrides it


class Settings(StrictModel):
    """The settings file: the engine, where things are, and one table per part of an agent."""

    engine: str = "bundled"
    store: str = ""
    workspace: str = "."
    agent: AgentSettings = AgentSettings()
    shell: ShellSettings = ShellSettings()
    budget: BudgetSettings = BudgetSettings()
    memory: MemorySettings = MemorySettings()
    engine_options: dict[str, Any] = Field(default_factory=dict)
    # MCP servers in the shape other agents use; the other sources: tools/mcp_config.py
    mcpServers: dict[str, McpServerConfig] = Field(default_factory=dict)

    @field_validator("mcpServers", mode="before")
    @classmethod
    def _mcp_servers(cls, value: Any) -> Any:
        # The same checks as an mcpServers file: names that prefix tool names, one transport.
        if not isinstance(value, dict):
            return value
        try:
            return load_servers(value)
        except McpConfigError as e:
            raise ValueError(f"[mcpServers] {e}") from None

    @property
    def home_path(self) -> Path:
        return home()

    @property
    def store_path(self) -> Path:
        return Path(self.store).expanduser() if self.store else self.home_path / "sessions.db"

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace).expanduser()

    @property
    def ledger_path(self) -> Path:
        return self.budget.ledger_path(self.home_path)


def read_toml(path: Path, *, required: bool, what: str = "config file",
              error: type[WhaleboneError] = SettingsError) -> dict[str, Any]:
    """The TOML document in ``path``: ``{}`` when there is none and none was asked for (the
    default place), ``error`` naming ``what`` when it cannot be read or an asked-for file is
    missing."""
    if not path.exists():
        if required:
            raise error(f"no {what} at {path}")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise error(f"cannot read the {what} {path}: {e}") from None


def load_settings(config: str | None = None) -> Settings:
    """The settings file (if any) with the environment applied on top."""
    path = Path(config).expanduser() if config else home() / "config.toml"
    data = read_toml(path, required=bool(config))
    if os.environ.get("WHALEBONE_ENGINE"):
        data["engine"] = os.environ["WHALEBONE_ENGINE"]
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(f"the config file {path} is invalid: {e}") from None


def open_engine_spec(spec: str, options: dict[str, Any] | None = None) -> Engine:
    """Open an engine by spec (``scripted:FILE`` and every other spec
    :func:`whalebone.engine.factory.open_engine` takes) with the settings' ``engine_options``."""
    from whalebone.engine.factory import open_engine

    return open_engine(spec, **dict(options or {}))


def open_budget(settings: Settings, engine: Engine, *, person: bool = False
                ) -> BudgetGuard:
    """The budget guard every front end runs with: always one, whatever is configured (see
    :mod:`whalebone.budget.setup`). ``person``: someone is watching and can decide at a cap."""
    from whalebone.budget.setup import BudgetSettingsError, open_guard

    options = dict(settings.budget.model_extra or {})
    if settings.budget.auditor is not None:
        options["auditor"] = settings.budget.auditor
    # An auditor of the same provider gets the engine options, but never the worker's model.
    engine_options = {k: v for k, v in settings.engine_options.items() if k != "model"}
    try:
        return open_guard(engine, options, ledger=settings.ledger_path,
                          open_engine=lambda spec: open_engine_spec(spec, engine_options),
                          person=person)
    except BudgetSettingsError as e:
        raise SettingsError(str(e)) from None
