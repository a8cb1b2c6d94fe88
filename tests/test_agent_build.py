"""build_agent: one way from settings to an agent, for every front end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whalebone.agent.build import Overrides, build_agent, resolve
from whalebone.agent.settings import Settings
from whalebone.agent.store import SessionError, SessionStore
from whalebone.engine.base import EngineError


def scripted(tmp_path: Path) -> str:
    (tmp_path / "s.json").write_text(json.dumps(["hi"]))
    return f"scripted:{tmp_path / 's.json'}"


def test_defaults_then_the_file_then_the_stored_session_then_the_overrides(
        tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "engine": scripted(tmp_path), "store": str(tmp_path / "s.db"),
        "agent": {"max_steps": 7, "max_tokens": 100, "name": "filed"}})
    agent = build_agent(settings)
    assert (agent.config.max_steps, agent.config.max_tokens, agent.config.name) == \
        (7, 100, "filed")
    assert agent.config.thinking == "thinking"  # a default, not a choice of the file
    store = SessionStore(tmp_path / "s.db")
    sid = store.create(config={"max_tokens": 200, "thinking": "chat", "name": "stored"})
    resumed = build_agent(settings, Overrides(session_id=sid, agent={"thinking": "max"}))
    assert (resumed.config.max_steps, resumed.config.max_tokens, resumed.config.name,
            resumed.config.thinking) == (7, 200, "stored", "max")
    with pytest.raises(SessionError):
        build_agent(settings, Overrides(session_id="nope"))


def test_tools_shell_allow_and_memory_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "engine": scripted(tmp_path), "workspace": str(tmp_path),
        "shell": {"allow": ["ls *"]}, "memory": {"scope": "project:demo"}})
    parts = resolve(settings, Overrides(allow=["git status"]))
    assert parts.shell_policy.allow == ["ls *", "git status"]
    assert parts.workspace == tmp_path and parts.memory_scope == "project:demo"
    agent = build_agent(settings)
    names = [t["function"]["name"] for t in agent.tools.schemas()]
    assert names[0] == "read_file" and names[-1] == "memory"
    bare = build_agent(settings, Overrides(tools="none", memory=""))
    assert bare.tools.schemas() == []


def test_a_settings_error_comes_before_the_engine_is_opened(tmp_path: Path) -> None:
    broken = Settings.model_validate({"engine": "teapot", "store": str(tmp_path / "s.db")})
    with pytest.raises(SessionError):  # the session is looked up first ...
        build_agent(broken, Overrides(session_id="nope"))
    with pytest.raises(EngineError, match="unknown engine"):  # ... the engine last
        build_agent(broken)
