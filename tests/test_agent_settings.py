"""Settings for the command line: TOML file, environment, engine specs, budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whalebone.agent.settings import (
    Settings,
    SettingsError,
    load_settings,
    open_budget,
    open_engine_spec,
)
from whalebone.budget.guard import BudgetGuard
from whalebone.engine.base import EngineError
from whalebone.engine.scripted import ScriptedEngine


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    (tmp_path / "config.toml").write_text('engine = "deepseek"\nstore = "~/s.db"\n'
                                          '[agent]\nmax_steps = 7\n')
    s = load_settings()
    assert s.engine == "deepseek" and s.agent.given() == {"max_steps": 7}
    assert s.store_path == Path("~/s.db").expanduser()
    monkeypatch.setenv("WHALEBONE_ENGINE", "vllm:http://gpu:8000")
    assert load_settings().engine == "vllm:http://gpu:8000"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    s = load_settings()
    assert s.engine == "bundled" and s.store_path == tmp_path / "sessions.db"
    with pytest.raises(SettingsError, match="no config file"):
        load_settings(str(tmp_path / "nope.toml"))
    (tmp_path / "bad.toml").write_text("unknown_key = 1\n")
    with pytest.raises(SettingsError, match="invalid"):
        load_settings(str(tmp_path / "bad.toml"))


def test_scripted_specs_and_errors(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text(json.dumps(["hi"]))
    assert isinstance(open_engine_spec(f"scripted:{tmp_path / 'ok.json'}"), ScriptedEngine)
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(EngineError, match="JSON list"):
        open_engine_spec(f"scripted:{tmp_path / 'bad.json'}")
    with pytest.raises(EngineError, match="unknown engine"):
        open_engine_spec("teapot")


def test_every_settings_open_a_guard_and_a_budget_section_shapes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path / "home"))
    engine = ScriptedEngine([])
    guard = open_budget(Settings(), engine)  # nothing configured: still metered
    assert isinstance(guard, BudgetGuard) and guard.ledger.path == tmp_path / "home" / "budget.db"
    guard = open_budget(Settings(budget={"ledger": str(tmp_path / "b.db"), "run_usd": 0.5}),
                        engine)
    assert isinstance(guard, BudgetGuard) and guard.policy.run_usd == 0.5
    (tmp_path / "bad.toml").write_text("[budget]\nrun_usd = -1\n")
    with pytest.raises(SettingsError, match="run_usd"):
        load_settings(str(tmp_path / "bad.toml"))


@pytest.mark.parametrize("text, needle", [
    ("[agent]\nmax_step = 3", "'max_step': did you mean 'max_steps'"),
    ("[shell]\nalow = ['ls']", "'alow': did you mean 'allow'"),
    ("[budget]\nsesion_usd = 1.0", "'sesion_usd': did you mean 'session_usd'"),
    ("[memory]\nscop = 'x'", "'scop': did you mean 'scope'"),
    ("enigne = 'deepseek'", "'enigne': did you mean 'engine'"),
])
def test_an_unknown_key_in_any_table_is_refused_naming_the_likely_one(
        tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "c.toml").write_text(text + "\n")
    with pytest.raises(SettingsError, match=needle):
        load_settings(str(tmp_path / "c.toml"))
