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
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from whalebone.dsml.errors import WhaleboneError
from whalebone.engine.base import Engine


class SettingsError(WhaleboneError):
    """A config file or flag that cannot be used."""


def home() -> Path:
    return Path(os.environ.get("WHALEBONE_HOME") or "~/.whalebone").expanduser()


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    engine: str = "bundled"
    store: str = ""
    workspace: str = "."
    agent: dict[str, Any] = {}
    shell: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    engine_options: dict[str, Any] = {}

    @property
    def store_path(self) -> Path:
        return Path(self.store).expanduser() if self.store else home() / "sessions.db"


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


def open_budget(settings: Settings, engine: Engine, *, person: bool = False) -> Any:
    """The budget guard every front end runs with: always one, whatever is configured (see
    :mod:`whalebone.budget.setup`). ``person``: someone is watching and can decide at a cap."""
    from whalebone.budget.setup import BudgetSettingsError, open_guard

    # An auditor of the same provider gets the engine options, but never the worker's model.
    options = {k: v for k, v in settings.engine_options.items() if k != "model"}
    try:
        return open_guard(engine, settings.budget, ledger=home() / "budget.db",
                          open_engine=lambda spec: open_engine_spec(spec, options),
                          person=person)
    except BudgetSettingsError as e:
        raise SettingsError(str(e)) from None
