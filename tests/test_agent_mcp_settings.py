"""[mcpServers.NAME] in the settings: `whalebone run` and the daemon start the servers for a run and
give the agent their tools; a bad table is refused when the file is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agent_kit import call, say, script
from daemon_kit import DaemonProc, write_config, write_script

from whalebone.agent.settings import SettingsError, load_settings
from whalebone.dsml import emit_completion

pytest.importorskip("mcp")
DEMO_SERVER = str(Path(__file__).resolve().parent / "mcp_demo_server.py")


def mcp_table(name: str = "demo", **extra: object) -> str:
    values = {"command": sys.executable, "args": [DEMO_SERVER], **extra}
    return "\n".join([f"[mcpServers.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())
                      ]) + "\n"


def whalebone(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_gives_the_agent_the_servers_tools(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(mcp_table() + mcp_table("gone", command=str(tmp_path / "no-such")))
    engine = script(tmp_path, "s.json", [
        call(("demo__add", {"a": 2, "b": 40}), reasoning="Add them."),
        say("It is 42."),
    ])
    r = whalebone("run", "add 2 and 40", "--engine", engine, "--workspace", str(tmp_path),
                  "--config", str(config), "--json", home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["name"] == "demo__add" and result["content"] == "42"
    assert not result["is_error"]
    assert "server 'gone' did not start" in r.stderr  # the others still run


def test_a_required_server_that_cannot_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(mcp_table("must", command=str(tmp_path / "no-such"), required=True))
    engine = script(tmp_path, "s.json", [say("never asked")])
    r = whalebone("run", "x", "--engine", engine, "--workspace", str(tmp_path),
                  "--config", str(config), home=tmp_path / "home")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cannot start MCP server" in r.stderr


@pytest.mark.parametrize("text, needle", [
    ('[mcpServers."bad name"]\ncommand = "x"\n', "server name"),
    ("[mcpServers.x]\nargs = []\n", "command"),
    ('[mcpServers.x]\ncommand = "x"\ncomand = "y"\n', "comand"),
])
def test_a_bad_mcp_table_is_refused_when_the_file_is_read(tmp_path: Path, text: str,
                                                          needle: str) -> None:
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(SettingsError, match=needle):
        load_settings(str(tmp_path / "c.toml"))


def test_a_daemon_job_gets_the_servers_tools(tmp_path: Path) -> None:
    home = tmp_path / "home"
    completions = [emit_completion("", reasoning="Echo.",
                                   tool_calls=[("demo__zeta", {"text": "from mcp"})]),
                   emit_completion("Echoed.", reasoning="Done.")]
    config = write_config(home, engine=write_script(tmp_path / "s.json", completions))
    with open(config, "a", encoding="utf-8") as f:
        f.write(mcp_table())
    daemon = DaemonProc(home)
    try:
        job = daemon.submit("echo it")
        assert daemon.wait_job(job["id"])["status"] == "done"
        events = daemon.client.get(f"/jobs/{job['id']}/events").text
    finally:
        daemon.stop()
    assert '"name": "demo__zeta"' in events.replace('"name":"', '"name": "')
    assert "from mcp" in events


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_chat_gives_new_sessions_the_servers_tools(tmp_path: Path,
                                                        anyio_backend: str) -> None:
    """What ``run_chat`` does with [mcpServers]: the servers run beside the app, and their
    tools reach the runner (the real app, under its pilot)."""
    from tui_support import screen_text, wait_for

    from whalebone.agent.build import mcp_servers
    from whalebone.agent.cli import build_parser
    from whalebone.tui.cli import build_app

    engine = script(tmp_path, "s.json", [
        call(("demo__add", {"a": 2, "b": 40}), reasoning="Add them."), say("It is 42.")])
    config = tmp_path / "config.toml"
    config.write_text(f'workspace = "{tmp_path}"\n' + mcp_table())
    app = build_app(build_parser().parse_args(
        ["chat", "--config", str(config), "--engine", engine,
         "--sessions", str(tmp_path / "s.db")]))
    assert set(app.runner.mcp_setup.servers) == {"demo"}
    async with mcp_servers(app.runner.mcp_setup, app.runner.attach_mcp, print):
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*"add", "enter")
            await wait_for(pilot, lambda: not app.running and "It is 42." in screen_text(app))
    stored = app.runner.store.messages(app.runner.session_id)
    tool = next(m for m in stored if m["role"] == "tool")
    assert tool["content"] == "42"
    names = [t["function"]["name"] for t in stored[0]["tools"]]
    assert names[0] == "read_file" and "demo__add" in names
