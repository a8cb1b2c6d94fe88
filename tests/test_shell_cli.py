"""The shell's guarantees through ``whalebone run`` and ``sessions resume``, with a fresh HOME:
no orphaned command outlives a crash unreported, no credential lands in a file, and a machine
without a sandbox says so and asks (headless: refuses)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_kit import call, say, script

from whalebone.agent.store import SessionStore
from whalebone.tools.sandbox import group_running, unavailable

NO_SANDBOX = unavailable("on")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HOME": str(home), "WHALEBONE_HOME": str(home / ".whalebone"),
           **extra}
    env.pop("WHALEBONE_ENGINE", None)
    return env


def _home(tmp_path: Path, shell_settings: str) -> Path:
    home = tmp_path / "home"
    (home / ".whalebone").mkdir(parents=True)
    (home / ".whalebone" / "config.toml").write_text(f"[shell]\n{shell_settings}\n")
    return home


def _cli(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "whalebone.agent.cli", *args]


def _only_session(home: Path) -> str:
    store = SessionStore(home / ".whalebone" / "sessions.db")
    try:
        (info,) = store.list()
        return info.id
    finally:
        store.close()


@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_a_command_cut_short_by_a_crash_is_killed_and_reported(tmp_path: Path,
                                                               sandbox: str) -> None:
    if sandbox == "on" and NO_SANDBOX:
        pytest.skip(f"no sandbox here: {NO_SANDBOX}")
    home = _home(tmp_path, f'default = "allow"\nsandbox = "{sandbox}"')
    ws = tmp_path / "ws"
    ws.mkdir()
    side = ws / "side.txt"
    command = "echo A1 >> side.txt; sleep 25; echo A2 >> side.txt"
    engine = script(tmp_path, "s.json", [call(("shell", {"command": command})),
                                         say("Finished.")]).replace("scripted:", "replay:")
    env = _env(home)
    run = subprocess.Popen(_cli("run", "Do it.", "--engine", engine, "--workspace", str(ws),
                                env=env), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not side.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the command's first effect is the event; nothing to await on
    assert side.read_text() == "A1\n", run.stderr.read() if run.stderr else ""
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    sid = _only_session(home)
    store = SessionStore(home / ".whalebone" / "sessions.db")
    (entry,) = store.journal(sid)
    store.close()
    assert entry.status == "started" and entry.process is not None
    pgid, started = entry.process["pgid"], entry.process["started"]
    if sandbox == "off":  # the crash left the command running, as in the issue
        assert group_running(pgid, started)
    resumed = subprocess.run(_cli("sessions", "resume", sid, "--engine", engine,
                                  "--workspace", str(ws), env=env),
                             env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert not group_running(pgid, started)  # nothing of it is left to write A2
    assert side.read_text() == "A1\n"
    store = SessionStore(home / ".whalebone" / "sessions.db")
    result = next(m["content"] for m in store.messages(sid) if m["role"] == "tool")
    store.close()
    assert result.startswith("interrupted:") and "killed" in result
    assert f"process group {pgid}" in result and "partly happened" in result
    assert "killed" in resumed.stdout + resumed.stderr  # the person is told too


def test_no_credential_lands_in_any_file(tmp_path: Path) -> None:
    env_key = "sk-" + secrets.token_hex(16)
    file_key = "sk-proj-" + secrets.token_hex(20)
    github = "ghp_" + secrets.token_hex(18)
    aws = "AKIA" + secrets.token_hex(8).upper()
    password = "pw-" + secrets.token_hex(6)
    private = "MIIEow" + secrets.token_hex(24)
    planted = [env_key, file_key, github, aws, password, private]
    home = _home(tmp_path, 'default = "allow"\npass_env = ["DEEPSEEK_API_KEY"]')
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".env").write_text(
        f"OPENAI_API_KEY={file_key}\nGITHUB_TOKEN={github}\nDB_PASSWORD={password}\n"
        f"-----BEGIN RSA PRIVATE KEY-----\n{private}\n-----END RSA PRIVATE KEY-----\n")
    engine = script(tmp_path, "s.json", [
        call(("shell", {"command": "cat .env; echo \"key: $DEEPSEEK_API_KEY\""}),
             ("read_file", {"path": ".env"})),
        say("I read the file and the key."),
    ])
    env = _env(home, DEEPSEEK_API_KEY=env_key)
    r = subprocess.run(_cli("run", f"Check the setup; my AWS key id is {aws}.", "--engine",
                            engine, "--workspace", str(ws), env=env),
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for text in (r.stdout, r.stderr):
        assert not [k for k in planted if k in text]
    files = [p for p in home.rglob("*") if p.is_file()]
    files += [p for p in ws.rglob("*") if p.is_file() and p.name != ".env"]
    assert any(p.name == "sessions.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not [k for k in planted if k.encode() in data], path
    store = SessionStore(home / ".whalebone" / "sessions.db")
    sid = store.list()[0].id
    tool_texts = [m["content"] for m in store.messages(sid) if m["role"] == "tool"]
    store.close()
    assert len(tool_texts) == 2
    for text in tool_texts:  # the model reads markers where the credentials were
        assert "[redacted: api key]" in text and "[redacted: private key]" in text
        assert "DB_PASSWORD=[redacted: secret value]" in text


def test_without_a_sandbox_it_says_so_and_asks(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with what commands need, and no bwrap
    bin_dir.mkdir()
    for tool in ("bash", "sh", "prlimit", "env", "echo", "cat"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                               text=True).stdout.strip()
        if found.startswith("/"):
            (bin_dir / tool).symlink_to(found)
    ws = tmp_path / "ws"
    ws.mkdir()
    engine = script(tmp_path, "s.json", [call(("shell", {"command": "echo hi > out.txt"})),
                                         say("Done.")])
    for setting, runs in (('sandbox = "on"', False), ('sandbox = "off"', True)):
        home = _home(tmp_path / setting.split('"')[1], f'default = "allow"\n{setting}')
        env = _env(home, PATH=str(bin_dir))
        r = subprocess.run(_cli("run", "Write it.", "--engine", engine, "--workspace",
                                str(ws), env=env),
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        notices = [line for line in r.stderr.splitlines() if "sandbox" in line]
        assert len(notices) == 1, r.stderr
        if runs:
            assert "without a sandbox" in notices[0] and (ws / "out.txt").exists()
        else:
            assert "NOT sandboxed" in notices[0] and "bwrap" in notices[0]
            assert "not approved" in r.stdout and not (ws / "out.txt").exists()
