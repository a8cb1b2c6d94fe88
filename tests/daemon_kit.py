"""Helpers for the daemon tests: replay scripts, a real daemon subprocess, its API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from whalebone.dsml import emit_completion

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def appends(n: int, answer: str = "All lines appended.") -> list[str]:
    """A replay script: turn k appends ``line-k`` (agent_kit's non-idempotent tool), then an
    answer."""
    turns = [emit_completion("", reasoning=f"Step {k}: append.",
                             tool_calls=[("append_line", {"line": f"line-{k}"})])
             for k in range(n)]
    return [*turns, emit_completion(answer, reasoning="Done.")]


def write_script(path: Path, completions: list[str]) -> str:
    path.write_text(json.dumps(completions), encoding="utf-8")
    return f"replay:{path}"


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def write_config(home: Path, *, tables: dict[str, dict[str, Any]] | None = None,
                 schedules: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    """A daemon.toml under ``home``: test defaults (any port, agent_kit's tools, a workspace)
    overridden by ``top``."""
    ws = home / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    values = {"home": str(home), "workspace": str(ws), "tools": "agent_kit:file_tools",
              "port": 0, "poll": 0.05, "grace": 10, "log": str(home / "daemon.log"), **top}
    lines = [f"{k} = {toml_value(v)}" for k, v in values.items()]
    tables = {"agent": {"date_in_task": False}, **(tables or {})}
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for s in schedules or []:
        lines.append("[[schedule]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in s.items()]
    path = home / "daemon.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "a condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class DaemonProc:
    """``whalebone daemon`` as a real subprocess."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "daemon.toml"
        env = {**os.environ, "WHALEBONE_HOME": str(home),
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        env.pop("WHALEBONE_DAEMON_TOKEN", None)
        addr = home / "daemon.json"
        addr.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "whalebone.agent.cli", "daemon", "--config",
             str(self.config)], env=env, cwd=home, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        info = wait_for(lambda: self._address(addr), 60, "the daemon to listen")
        self.url = info["url"]
        self.token = (home / "daemon.token").read_text().strip()
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {self.token}"})
        wait_for(lambda: self._healthy(), 30, "/health")

    def _address(self, path: Path) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            out = self.proc.stdout.read().decode() if self.proc.stdout else ""
            raise AssertionError(f"the daemon exited with {self.proc.returncode}: {out}"
                                 f"{self.log_text()}")
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.proc.pid else None

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        path = self.home / "daemon.log"
        return path.read_text() if path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def submit(self, task: str, **body: Any) -> dict[str, Any]:
        r = self.client.post("/jobs", json={"task": task, **body})
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, jid: str) -> dict[str, Any]:
        r = self.client.get(f"/jobs/{jid}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, jid: str, statuses: tuple[str, ...] = ("done", "stopped", "budget",
                                                               "failed", "cancelled"),
                 timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(jid))["status"] in statuses and j, timeout,
                        f"job {jid} to reach {statuses}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.client.close()
            if self.proc.stdout:
                self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        if self.proc.stdout:
            self.proc.stdout.close()
