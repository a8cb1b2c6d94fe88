"""The daemon's TOML configuration and its control token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from whalebone.agent.daemon.config import (
    DaemonConfigError,
    control_token,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    return path


def test_a_full_config_loads_with_paths_under_home(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, f"""
home = "{tmp_path}"
engine = "deepseek:deepseek-v4-flash"
concurrency = 4
grace = "1m"
poll = "250ms"
[budget]
run_usd = 0.5
[[schedule]]
name = "issues"
cron = "*/30 8-18 * * 1-5"
task = "Triage."
watch = ["issues/*.md"]
day_usd = 1.0
[[schedule]]
name = "ci"
every = "10m"
check = "git rev-parse HEAD"
task = "Check CI."
"""))
    assert cfg.concurrency == 4 and cfg.grace_s == 60.0 and cfg.poll_s == 0.25
    assert cfg.jobs_path == tmp_path / "jobs.db" and cfg.store_path == tmp_path / "sessions.db"
    assert cfg.ledger_path == tmp_path / "budget.db"
    assert [s.name for s in cfg.schedule] == ["issues", "ci"]
    assert cfg.schedule_named("ci").every == 600.0  # type: ignore[union-attr]
    assert all(s.heartbeat for s in cfg.schedule)


@pytest.mark.parametrize("text, needle", [
    ("colour = 'red'", "colour"),
    ("host = '0.0.0.0'", "host"),  # the control API is loopback only
    ("concurrency = 0", "concurrency"),
    ("tools = 'mine'", "module:function"),
    ("grace = 'soon'", "duration"),
    ("[[schedule]]\nname = 'a'\ntask = 't'\nevery = 1\n[[schedule]]\nname = 'a'\ntask = 't'\n"
     "every = 2", "unique"),
    ("engine = ", "cannot read"),
    ("[budget]\nsesion_usd = 1.0", "unknown keys"),  # a typo must not drop a limit
    ("[budget]\nsession_usd = -1", "session_usd"),
    ("[budget]\nauditor = 3", "auditor"),
    ("[agent]\nmax_step = 3", "unknown keys"),
    ("[shell]\ndefault = 'sometimes'", "default"),
])
def test_a_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(DaemonConfigError, match=needle):
        load_config(write(tmp_path, text))


def test_a_missing_named_config_is_an_error_but_no_default_file_means_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    with pytest.raises(DaemonConfigError, match="no daemon config"):
        load_config(tmp_path / "nope.toml")
    cfg = load_config()
    assert cfg.engine == "bundled" and cfg.jobs_path == tmp_path / "jobs.db"


def test_the_token_is_made_once_private_and_then_reused(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.delenv("WHALEBONE_DAEMON_TOKEN", raising=False)
    cfg = load_config(write(tmp_path, f'home = "{tmp_path}"'))
    token = control_token(cfg)
    path = tmp_path / "daemon.token"
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert control_token(cfg) == token
    os.chmod(path, 0o644)
    with pytest.raises(DaemonConfigError, match="readable by others"):
        control_token(cfg)
    monkeypatch.setenv("WHALEBONE_DAEMON_TOKEN", "from-env")
    assert control_token(cfg) == "from-env"
    given = load_config(write(tmp_path, f'home = "{tmp_path}"\ntoken = "given"'))
    assert control_token(given) == "given"


def test_the_shipped_example_config_loads_as_printed(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "daemon", "--example"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "[[schedule]]" in done.stdout and done.stdout.startswith("# whalebone daemon")
    cfg = load_config(write(tmp_path, done.stdout))
    assert cfg.engine == "deepseek:deepseek-v4-flash" and cfg.allows_engine(
        "deepseek:deepseek-v4-pro") and not cfg.allows_engine("deepseek:other")
    assert [s.name for s in cfg.schedule] == ["issues", "ci"]
    assert cfg.budget.policy().session_usd == 0.5


def test_the_default_workspace_is_under_home_never_the_current_directory(
        tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, f'home = "{tmp_path}"'))
    assert cfg.workspace_path == tmp_path / "workspace"
    given = load_config(write(tmp_path, f'home = "{tmp_path}"\nworkspace = "~/repo"'))
    assert given.workspace_path == Path("~/repo").expanduser()


def test_the_daemon_reads_the_same_tables_as_every_front_end(tmp_path: Path) -> None:
    from whalebone.agent.build import Overrides, resolve
    from whalebone.agent.settings import Settings

    cfg = load_config(write(tmp_path, f'home = "{tmp_path}"\n[agent]\nmax_steps = 9\n'
                                      '[shell]\nallow = ["ls *"]\n[memory]\nscope = "project:x"\n'))
    assert isinstance(cfg, Settings)
    parts = resolve(cfg, Overrides(agent={"thinking": "chat"}, tools="none"))
    assert parts.config.max_steps == 9 and parts.config.thinking == "chat"
    assert parts.shell_policy.allow == ["ls *"] and parts.memory_scope == "project:x"
    assert parts.workspace == tmp_path / "workspace"
    assert parts.store.path == tmp_path / "sessions.db"
