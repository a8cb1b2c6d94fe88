"""The home folder is private: ``whalebone run``, ``budget``, ``memory`` and the daemon, started
with a fresh ``WHALEBONE_HOME``, leave it 0700 with every file in it 0600 (sessions, jobs, the
ledger, memory, logs, the daemon's address and token), whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from agent_kit import call, say, script
from daemon_kit import DaemonProc, appends, write_config, write_script


def whalebone(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def modes(home: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every folder and file under ``home`` (``home`` itself included) whose mode lets anyone
    but its owner in, as {path: octal mode}."""
    loose: dict[str, str] = {}
    for path in [home, *home.rglob("*")]:
        if any(path == s or path.is_relative_to(s) for s in skip):
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose[str(path.relative_to(home.parent))] = oct(mode)
    return loose


def test_run_budget_and_memory_leave_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "home"  # does not exist yet: whalebone makes it
    ws = tmp_path / "ws"
    ws.mkdir()
    config = tmp_path / "config.toml"
    config.write_text('[budget]\nrun_usd = 5.0\n', encoding="utf-8")
    engine = script(tmp_path, "s.json", [
        call(("memory", {"command": "create", "path": "/memories/notes.md",
                         "file_text": "the user's secret plan\n"}), reasoning="Note it."),
        say("Noted."),
    ])
    old = os.umask(0o022)  # the usual umask, which would make files 0644
    try:
        r = whalebone("run", "remember my plan", "--engine", engine, "--workspace", str(ws),
                      "--config", str(config), "--memory", "project:demo", home=home)
        assert r.returncode == 0, r.stderr
        assert whalebone("budget", "show", home=home).returncode == 0
    finally:
        os.umask(old)
    names = {p.name for p in home.rglob("*")}
    assert {"sessions.db", "budget.db"} <= names, names
    assert any(p.name == "notes.md" for p in home.rglob("*")), names
    assert modes(home) == {}


def test_the_daemon_leaves_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # an older whalebone's home: the daemon tightens it
    os.chmod(home, 0o755)
    config = write_config(home, engine=write_script(tmp_path / "s.json", appends(1)),
                          tables={"budget": {"run_usd": 5.0}})
    os.chmod(config, 0o600)  # the person's own file, as the README tells them to keep it
    old = os.umask(0o022)
    try:
        daemon = DaemonProc(home)
    finally:
        os.umask(old)
    try:
        job = daemon.submit("append a line")
        assert daemon.wait_job(job["id"])["status"] == "done"
    finally:
        daemon.stop()
    names = {p.name for p in home.rglob("*")}
    assert {"jobs.db", "sessions.db", "budget.db", "daemon.json", "daemon.log",
            "daemon.token"} <= names, names
    # ws/ is the workspace the test made (where the agent's files belong, with the umask).
    assert modes(home, skip=(home / "ws",)) == {}


def test_the_bundled_engines_prefix_cache_is_private_too(tmp_path: Path) -> None:
    """Snapshots hold a conversation's KV state: as private as the conversation."""
    pytest.importorskip("torch")
    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        r = whalebone("run", "hi", "--engine", "bundled", "--no-tools", "--max-steps", "1",
                      "--max-tokens", "4", "--workspace", str(tmp_path), home=home)
    finally:
        os.umask(old)
    assert r.returncode in (0, 3), r.stderr  # 3: stopped at max_steps, which is fine here
    assert any(p.suffix == ".safetensors" for p in (home / "cache").rglob("*"))
    assert modes(home) == {}
