"""The daemon's configuration: one TOML file, re-read on SIGHUP.

``--config PATH``, else ``$WHALEBONE_HOME/daemon.toml``; no file at the default place means
the defaults. Every key is checked (a misspelt key is an error, not silently ignored); the
example in the package docstring lists them all.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from whalebone.agent.settings import Settings, read_toml
from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home, private_dir


class DaemonConfigError(WhaleboneError):
    """A daemon configuration file (or option) that cannot be used."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: float | int | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"500ms"``."""
    if isinstance(value, bool):
        raise DaemonConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if m is None:
            raise DaemonConfigError(f"not a duration: {value!r} (use e.g. 30s, 15m, 2h, 1d)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not seconds > 0:
        raise DaemonConfigError(f"a duration must be positive, got {value!r}")
    return seconds


class ScheduleConfig(BaseModel):
    """A schedule (``every`` or ``cron``) that submits ``task``; with ``watch`` or ``check`` it
    is a heartbeat: each tick first fingerprints the watched files or the check command's
    output, and submits nothing (calls no model) when the fingerprint has not changed."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    every: float | str | None = None  # seconds, or "15m"
    cron: str | None = None  # "*/15 * * * *" (minute hour day month weekday, UTC)
    watch: list[str] = []  # globs under the workspace
    check: str | None = None  # a shell command whose output (and exit status) is fingerprinted
    check_timeout: float = Field(30.0, gt=0)
    run_first: bool = False  # run at the first tick, before any fingerprint is known
    engine: str | None = None  # default: the daemon's engine
    budget_usd: float | None = Field(None, ge=0)  # scope schedule:NAME, over its whole life
    budget_tokens: int | None = Field(None, ge=0)
    day_usd: float | None = Field(None, ge=0)  # scope schedule:NAME:YYYY-MM-DD (UTC)
    day_tokens: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if not _NAME.match(self.name):
            raise ValueError(f"schedule name {self.name!r}: letters, digits, '_', '.', '-'")
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"schedule {self.name!r} needs exactly one of every or cron")
        if self.every is not None:
            self.every = parse_duration(self.every)
        if self.cron is not None:
            from whalebone.agent.daemon.scheduler import Cron

            Cron(self.cron).next_after(time.time())  # raises on a bad or impossible one
        if not self.task.strip():
            raise ValueError(f"schedule {self.name!r} has an empty task")
        return self

    @property
    def heartbeat(self) -> bool:
        return bool(self.watch) or self.check is not None


class DaemonConfig(Settings):
    """The daemon's file: the settings every front end reads (engine, store, workspace, the
    [agent], [shell], [budget] and [memory] tables, the same typed models), plus the daemon's
    own keys. ``engine`` may also be ``replay:FILE`` (see engines.py)."""

    what: ClassVar[str] = "the daemon config"

    # Other specs a submitted job may name. A job's engine is the daemon's choice, not the
    # submitter's: an engine spec can point at any URL with the host's API key.
    engines: list[str] = Field(default_factory=list)
    home: str = ""  # default: $WHALEBONE_HOME or ~/.whalebone
    jobs: str = ""  # job queue database (default: HOME/jobs.db)
    # Where the tools work. Not the current directory by default: a service manager starts
    # the daemon in "/", and an agent must never get the whole machine by omission.
    workspace: str = ""  # default: HOME/workspace
    tools: str = "builtin"  # builtin | none | module:function (called with the workspace Path)
    concurrency: int = Field(2, ge=1, le=64)
    host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"  # loopback only
    port: int = Field(8765, ge=0, le=65535)  # 0: any free port (see HOME/daemon.json)
    token: str = ""  # default: $WHALEBONE_DAEMON_TOKEN, else HOME/daemon.token (made 0600)
    grace: float | str = 20.0  # seconds running jobs get to reach a checkpoint on SIGTERM
    max_crashes: int = Field(3, ge=0)  # deaths while a job runs before it is given up
    poll: float | str = 0.2  # how often the queue and cancel flags are looked at
    log: str = "-"  # JSON lines: "-" is stderr, anything else a file appended to
    schedule: list[ScheduleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DaemonConfig:
        self.grace = parse_duration(self.grace) if self.grace != 0 else 0.0
        self.poll = parse_duration(self.poll)
        names = [s.name for s in self.schedule]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"schedule names must be unique: {sorted(dup)}")
        if self.tools not in ("builtin", "none") and ":" not in self.tools:
            raise ValueError(f"tools = {self.tools!r}: builtin, none or module:function")
        return self

    # --- paths ------------------------------------------------------------------------------

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser() if self.home else home()

    def _path(self, value: str, default: str) -> Path:
        return Path(value).expanduser() if value else self.home_path / default

    @property
    def workspace_path(self) -> Path:
        return self._path(self.workspace, "workspace")

    @property
    def store_path(self) -> Path:
        return self._path(self.store, "sessions.db")

    @property
    def jobs_path(self) -> Path:
        return self._path(self.jobs, "jobs.db")

    @property
    def grace_s(self) -> float:
        return float(self.grace)

    @property
    def poll_s(self) -> float:
        return float(self.poll)

    def allows_engine(self, spec: str) -> bool:
        """Whether a job may run on ``spec`` (empty: the daemon's own engine)."""
        return (not spec or spec == self.engine or spec in self.engines
                or any(s.engine == spec for s in self.schedule))

    def schedule_named(self, name: str) -> ScheduleConfig | None:
        return next((s for s in self.schedule if s.name == name), None)


def default_config_path() -> Path:
    return home() / "daemon.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> DaemonConfig:
    """The configuration in ``path`` (or the default file, or the defaults)."""
    file = Path(path).expanduser() if path else default_config_path()
    data = read_toml(file, required=bool(path), what="daemon config", error=DaemonConfigError)
    if os.environ.get("WHALEBONE_ENGINE") and "engine" not in data:
        data["engine"] = os.environ["WHALEBONE_ENGINE"]
    try:
        return DaemonConfig.model_validate(data)
    except (ValidationError, DaemonConfigError) as e:
        raise DaemonConfigError(f"the daemon config {file} is invalid: {e}") from None


def control_token(config: DaemonConfig) -> str:
    """The bearer token of the control API: the config's, the environment's, or the one in
    ``HOME/daemon.token``, which is generated (mode 0600) on first use."""
    if config.token:
        return config.token
    if os.environ.get("WHALEBONE_DAEMON_TOKEN"):
        return os.environ["WHALEBONE_DAEMON_TOKEN"]
    path = config.home_path / "daemon.token"
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        raise DaemonConfigError(f"the token file {path} is readable by others: "
                                f"chmod 600 {path}")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise DaemonConfigError(f"the token file {path} is empty")
    return token
