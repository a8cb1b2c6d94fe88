"""MCP servers from the files other agents use, and a project's only once trusted: through
``whalebone mcp`` with real third-party servers from the package index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whalebone.tools.mcp_config import discover, is_trusted, trust

BIN = Path(sys.executable).parent
TIME = BIN / "mcp-server-time"
needs_servers = pytest.mark.skipif(not TIME.exists(), reason="mcp-server-time is not installed "
                                   "(the dev extra installs it)")


def servers(**named: str) -> str:
    return json.dumps({"mcpServers": {n: {"command": c} for n, c in named.items()}})


def test_sources_override_in_order_and_a_project_needs_trust(tmp_path: Path) -> None:
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    ws.mkdir()
    (home / "mcp.json").write_text(servers(a="user-a", b="user-b"))
    (ws / ".mcp.json").write_text(servers(b="project-b", c="project-c"))
    extra = tmp_path / "extra.json"
    extra.write_text(servers(c="named-c"))

    setup = discover(home, ws, [extra], user_servers={"z": {"command": "toml-z"}})
    assert {n: s.command for n, s in setup.servers.items()} == {
        "a": "user-a", "b": "user-b", "c": "named-c", "z": "toml-z"}  # project not trusted
    assert len(setup.notes) == 1 and "names MCP servers b, c: not started" in setup.notes[0]

    assert trust(home, ws) == ["b", "c"]
    assert oct((home / "mcp-trust.json").stat().st_mode & 0o777) == "0o600"
    setup = discover(home, ws, [extra])
    assert {n: s.command for n, s in setup.servers.items()} == {
        "a": "user-a", "b": "project-b", "c": "named-c"}
    assert setup.origins["b"] == str(ws / ".mcp.json") and not setup.notes

    (ws / ".mcp.json").write_text(servers(b="sneaky"))  # an edit must be trusted again
    assert not is_trusted(home, ws)
    assert discover(home, ws).servers["b"].command == "user-b"


def test_a_bad_source_is_a_note_and_a_named_file_an_error(tmp_path: Path) -> None:
    (tmp_path / "mcp.json").write_text("{not json")
    setup = discover(tmp_path, None)
    assert not setup.servers and "skipped" in setup.notes[0]
    with pytest.raises(Exception, match="cannot read MCP configuration"):
        discover(tmp_path, None, [tmp_path / "missing.json"])


@needs_servers
def test_mcp_list_starts_real_servers_once_trusted(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".mcp.json").write_text(servers(time=str(TIME), broken=str(tmp_path / "no-such")))
    env = {**os.environ, "HOME": str(tmp_path), "WHALEBONE_HOME": str(tmp_path / ".wb")}

    def mcp(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "mcp", *argv,
                               "--workspace", str(ws)], capture_output=True, text=True,
                              env=env, timeout=120)

    before = mcp("list", "--tools")
    assert before.returncode == 0 and "no MCP servers configured" in before.stdout
    assert "not started until you trust them" in before.stderr
    assert mcp("trust").returncode == 0
    after = mcp("list", "--tools")
    assert after.returncode == 1  # one server did not start: said in one line
    lines = after.stdout.splitlines()
    assert any(line.startswith("broken: did not start:") for line in lines)
    assert "  time__get_current_time" in lines and "  time__convert_time" in lines


@needs_servers
def test_run_gives_a_session_agents_md_and_the_trusted_servers_tools(tmp_path: Path) -> None:
    """Through `whalebone run`: AGENTS.md in the session's system prompt, the project's MCP
    server started (once trusted) and its tool called by the model."""
    from whalebone.agent.store import SessionStore
    from whalebone.dsml import tokens as T
    from whalebone.dsml.emit import emit_tool_calls

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "AGENTS.md").write_text("Always give times in UTC.\n")
    (ws / ".mcp.json").write_text(servers(time=str(TIME)))
    script = tmp_path / "script.jsonl"
    call = "Checking." + T.THINK_END + emit_tool_calls(
        [("time__get_current_time", {"timezone": "UTC"})]) + T.EOS
    script.write_text(json.dumps(call) + "\n" + json.dumps("Done." + T.THINK_END + "Noted."
                                                          + T.EOS) + "\n")
    env = {**os.environ, "HOME": str(tmp_path), "WHALEBONE_HOME": str(tmp_path / ".wb")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *argv],
                              capture_output=True, text=True, env=env, timeout=120, cwd=ws)

    assert run("mcp", "trust", "--workspace", str(ws)).returncode == 0
    done = run("run", "--workspace", str(ws), "--engine", f"scripted:{script}", "What time?")
    assert done.returncode == 0, done.stderr
    assert f"project instructions from {ws / 'AGENTS.md'}" in done.stderr
    assert "← time__get_current_time:" in done.stdout and '"timezone": "UTC"' in done.stdout
    store = SessionStore(tmp_path / ".wb" / "sessions.db")
    (info,) = store.list()
    system = store.messages(info.id)[0]
    assert "Always give times in UTC." in system["content"]
    assert any(t["function"]["name"] == "time__get_current_time" for t in system["tools"])
