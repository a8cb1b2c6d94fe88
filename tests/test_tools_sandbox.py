"""The shell's sandbox, attacked from inside: each test runs a real command under bubblewrap that
tries to get out (write outside the workspace, read whalebone's home or ~/.ssh, reach a server on
127.0.0.1, see the host's /tmp or a secret in the environment) and asserts that it failed."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from whalebone.tools.sandbox import HIDDEN_SYSTEM, scrubbed_env, unavailable
from whalebone.tools.shell import ShellPolicy, run_shell

PROBLEM = unavailable("on")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox here: {PROBLEM}")
TRUST = ShellPolicy(default="allow", deny=[])


def sh(command: str, ws: Path, policy: ShellPolicy = TRUST) -> str:
    return anyio.run(run_shell, command, ws, policy, None)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A HOME outside /tmp (which the sandbox replaces anyway), with secrets in it."""
    path = Path(tempfile.mkdtemp(prefix="whalebone-home-", dir="/var/tmp"))
    (path / ".whalebone").mkdir()
    (path / ".whalebone" / "config.toml").write_text("key = 'WB-SECRET-CONFIG'\n")
    (path / ".ssh").mkdir()
    (path / ".ssh" / "id_ed25519").write_text("SSH-SECRET-KEY\n")
    (path / ".netrc").write_text("machine x password NETRC-SECRET\n")
    (path / "notes.txt").write_text("readable\n")
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("WHALEBONE_HOME", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_workspace_is_writable_and_nothing_else(tmp_path: Path, home: Path) -> None:
    outside = Path("/var/tmp") / f"whalebone-escape-{uuid.uuid4().hex}"
    out = sh(f"echo in > inside.txt; echo out > {outside}; echo x > {home}/notes.txt; "
             f"touch {home}/new.txt; mkdir {tmp_path.parent}/escaped; echo done", tmp_path)
    try:
        assert (tmp_path / "inside.txt").read_text() == "in\n"
        assert not outside.exists() and not (home / "new.txt").exists()
        assert (home / "notes.txt").read_text() == "readable\n"
        assert not (tmp_path.parent / "escaped").exists()
        assert "Read-only file system" in out and out.rstrip().endswith("done")
    finally:
        outside.unlink(missing_ok=True)


def test_whalebone_home_and_credential_stores_are_hidden(tmp_path: Path, home: Path) -> None:
    out = sh("cat ~/.whalebone/config.toml ~/.ssh/id_ed25519 ~/.netrc; cat ~/notes.txt",
             tmp_path)
    for secret in ("WB-SECRET-CONFIG", "SSH-SECRET-KEY", "NETRC-SECRET"):
        assert secret not in out
    assert "readable" in out  # the rest of HOME stays readable
    assert sh("find ~/.whalebone ~/.ssh -mindepth 1 | wc -l", tmp_path).split()[-1] == "0"


def test_a_workspace_inside_a_hidden_folder_is_still_usable(tmp_path: Path, home: Path
                                                            ) -> None:
    ws = home / ".whalebone" / "jobs" / "ws"
    ws.mkdir(parents=True)
    out = sh("echo ok > f.txt; cat ../../config.toml", ws)
    assert (ws / "f.txt").read_text() == "ok\n" and "WB-SECRET-CONFIG" not in out


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """A real TCP server on 127.0.0.1 that records what reaches it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                got.append(conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1], got
    sock.close()


def test_no_network_unless_the_policy_allows_it(tmp_path: Path,
                                                server: tuple[int, list[bytes]]) -> None:
    port, got = server
    probe = f"echo hello > /dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    out = sh(probe, tmp_path)
    assert "CONNECTED" not in out and got == []
    out = sh(probe, tmp_path, ShellPolicy(default="allow", deny=[], network=True))
    assert "CONNECTED" in out and got == [b"hello\n"]


def test_tmp_is_fresh(tmp_path: Path) -> None:
    host = Path("/tmp") / f"whalebone-host-{uuid.uuid4().hex}"
    host.write_text("HOSTDATA")
    try:
        out = sh(f"cat {host}; echo scratch > /tmp/s && cat /tmp/s", tmp_path)
        assert "HOSTDATA" not in out and "scratch" in out
    finally:
        host.unlink()


def test_secrets_are_scrubbed_from_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"DEEPSEEK_API_KEY": "sk-planted0000000000000000000001", "MY_SERVICE_TOKEN":
               "tok-planted-2", "AWS_ACCESS_KEY_ID": "id-planted-3", "DB_PASSWORD":
               "pw-planted-4", "GOOGLE_APPLICATION_CREDENTIALS": "/x/planted-5.json",
               "APP_SECRET_VALUE": "planted-6", "WHALEBONE_SERVE_KEY": "planted-7",
               "AZURE_CLIENT_SECRET": "planted-8"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ORDINARY_SETTING", "visible")
    out = sh("env", tmp_path)
    for k, v in secrets.items():
        assert k not in out and v not in out
    assert "ORDINARY_SETTING=visible" in out and "PATH=" in out
    named = sh("env", tmp_path, ShellPolicy(default="allow", deny=[], pass_env=["DB_PASSWORD"]))
    assert "DB_PASSWORD=" in named and "MY_SERVICE_TOKEN" not in named
    assert scrubbed_env(["X_TOKEN"], {"X_TOKEN": "a", "Y_TOKEN": "b"}) == {"X_TOKEN": "a"}


def test_resource_limits_bind(tmp_path: Path) -> None:
    policy = ShellPolicy(default="allow", deny=[], max_file_mb=1, cpu_seconds=1)
    sh("head -c 3000000 /dev/zero > big.bin", tmp_path, policy)
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024
    out = sh("while :; do :; done", tmp_path, policy)  # killed by RLIMIT_CPU, not the timeout
    assert not out.startswith("timed out") and "exit code 0" not in out


def test_the_command_runs_in_its_own_session_without_capabilities(tmp_path: Path) -> None:
    out = sh("grep CapEff /proc/self/status; ps -o pid= -p 1 >/dev/null && echo PIDNS", tmp_path)
    assert "0000000000000000" in out and "PIDNS" in out


def test_a_hidden_unix_socket_cannot_be_reached(tmp_path: Path) -> None:
    """A read-only mount still lets a process connect() to a socket in it; hidden ones (the
    Docker and D-Bus sockets, /run/user by default) cannot be reached."""
    folder = Path(tempfile.mkdtemp(prefix="whalebone-sock-", dir="/var/tmp"))
    path = folder / "service.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen()

    async def yes(command: str) -> bool:
        return True

    # The venv may live under /tmp (a CI clone), which the sandbox replaces with a fresh one:
    # probe with the interpreter the venv was made from.
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    probe = (f"{python} -c 'import socket; s = socket.socket(socket.AF_UNIX); "
             f"s.connect(\"{path}\"); print(\"CONNECTED\")'")
    try:
        seen = anyio.run(run_shell, probe, tmp_path, TRUST, yes)
        hidden = anyio.run(run_shell, probe, tmp_path,
                           ShellPolicy(default="allow", deny=[], hide=[str(folder)]), yes)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert "CONNECTED" in seen  # the probe works where nothing hides the socket
    assert "CONNECTED" not in hidden
    assert {"/run/user", "/var/run/docker.sock", "/run/dbus"} <= set(HIDDEN_SYSTEM)
