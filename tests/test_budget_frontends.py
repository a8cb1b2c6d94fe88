"""The budget guard is on in every front end, with no configuration: a limit set with the real
``whalebone budget set`` (a subprocess, fresh WHALEBONE_HOME) stops the next call of ``run``,
``sessions resume``, ``chat`` (under its pilot) and a daemon job, with nothing spent past it; a
decision taken in one front end unfreezes a run waiting in another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_kit import say
from daemon_kit import DaemonProc, appends, write_config, write_script

from whalebone.budget.ledger import Ledger
from whalebone.budget.setup import DEFAULT_DAY_USD

EXIT_BUDGET = 4


def whalebone(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def budget_set(home: Path, *args: str) -> None:
    r = whalebone("budget", "set", *args, home=home)
    assert r.returncode == 0, r.stderr


def report(home: Path) -> dict[str, Any]:
    r = whalebone("budget", "show", "--json", home=home)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def nothing_overspent(home: Path) -> dict[str, dict[str, Any]]:
    scopes = {s["scope"]: s for s in report(home)["scopes"]}
    for s in scopes.values():
        assert s["reserved_usd"] == 0 and s["reserved_tokens"] == 0, s
        if s["max_tokens"] is not None:
            assert s["spent_tokens"] <= s["max_tokens"], s
        if s["max_usd"] is not None:
            assert s["spent_usd"] <= s["max_usd"] + 1e-12, s
    return scopes


def scripted(tmp_path: Path, completions: list[str], name: str = "s.json", query: str = ""
             ) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(completions), encoding="utf-8")
    return f"scripted:{path}{query}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_run_is_metered_with_no_configuration(tmp_path: Path, home: Path) -> None:
    assert "no model call metered yet" in whalebone("budget", home=home).stdout
    r = whalebone("run", "hello", "--engine", scripted(tmp_path, [say("Hi.")]), home=home)
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip().rsplit("session ", 1)[1]
    scopes = nothing_overspent(home)
    session = scopes[f"session:{sid}"]
    assert session["spent_tokens"] > 100 and session["spend_by_kind"] == {"turn": 0.0}
    assert any(s.startswith("global:") and v["spent_tokens"] == session["spent_tokens"]
               for s, v in scopes.items())
    shown = whalebone("budget", home=home).stdout
    assert f"session:{sid}" in shown and "saved" in shown


def test_a_limit_set_with_budget_set_stops_the_next_run(tmp_path: Path, home: Path) -> None:
    budget_set(home, "global", "--tokens", "1000")  # the issue's own reproduction
    r = whalebone("run", "hello", "--engine", scripted(tmp_path, [say("Hi.")]), home=home)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    assert "budget stop: global:" in r.stdout and "limit 1000 tokens" in r.stdout
    assert "no_auditor" in r.stdout  # headless, no auditor for a scripted engine: deny
    scopes = nothing_overspent(home)
    assert all(s["spent_tokens"] == 0 for s in scopes.values())
    (decision,) = report(home)["decisions"]
    assert decision["decision"] == "deny" and decision["scope"].startswith("global:")


def test_a_limit_set_on_a_session_stops_its_resume(tmp_path: Path, home: Path) -> None:
    first = whalebone("run", "hello", "--engine", scripted(tmp_path, [say("Hi.")]), home=home)
    assert first.returncode == 0, first.stderr
    sid = first.stdout.strip().rsplit("session ", 1)[1]
    spent = nothing_overspent(home)[f"session:{sid}"]["spent_tokens"]
    budget_set(home, f"session:{sid}", "--tokens", str(spent + 50))
    r = whalebone("sessions", "resume", sid, "and again", "--engine",
                  scripted(tmp_path, [say("Again.")], "more.json"), home=home)
    assert r.returncode == EXIT_BUDGET, r.stdout + r.stderr
    assert f"budget stop: session:{sid}" in r.stdout
    assert nothing_overspent(home)[f"session:{sid}"]["spent_tokens"] == spent
    # The person's limit is itself a logged decision.
    assert any(d["decision"] == "set" and d["scope"] == f"session:{sid}"
               for d in report(home)["decisions"])


@pytest.mark.parametrize(("config", "command"), [(100_000, 50), (50, 100_000)])
def test_config_and_command_line_limits_combine_by_the_strictest(
        tmp_path: Path, home: Path, config: int, command: int) -> None:
    (home / "config.toml").write_text(f"[budget]\nsession_tokens = {config}\n")
    budget_set(home, "session", "--tokens", str(command))
    r = whalebone("run", "hello", "--engine", scripted(tmp_path, [say("Hi.")]), home=home)
    assert r.returncode == EXIT_BUDGET and "limit 50 tokens" in r.stdout, r.stdout + r.stderr
    nothing_overspent(home)


def test_budget_set_help_explains_the_scopes(home: Path) -> None:
    text = whalebone("budget", "set", "--help", home=home).stdout
    for piece in ("global | day", "session:ID", "agent:NAME", "run:ID", "examples:",
                  "whalebone budget set global --usd", "strictest", f"${DEFAULT_DAY_USD:g} a day"):
        assert piece in text, piece


def test_a_priced_engine_gets_a_default_daily_cap_said_once(tmp_path: Path, home: Path
                                                             ) -> None:
    engine = scripted(tmp_path, [say("Hi."), say("Hi again.")],
                      query="?model=deepseek-v4-flash")
    first = whalebone("run", "hello", "--engine", engine, home=home)
    assert first.returncode == 0, first.stderr
    notes = [line for line in first.stderr.splitlines() if "budget" in line]
    assert len(notes) == 1 and f"${DEFAULT_DAY_USD:g} a day" in notes[0]
    assert "whalebone budget set global --usd" in notes[0]
    second = whalebone("run", "hello", "--engine", engine, home=home)
    assert second.returncode == 0 and "a day" not in second.stderr
    scopes = nothing_overspent(home)
    (today,) = [s for name, s in scopes.items() if name.startswith("global:")]
    assert today["max_usd"] == DEFAULT_DAY_USD and today["spent_usd"] > 0
    # The bundled engine's default: metered in tokens, no cap in dollars.
    bundled_like = whalebone("run", "hi", "--engine", scripted(tmp_path, [say("x")], "l.json"),
                             home=tmp_path / "other")
    assert bundled_like.returncode == 0 and "a day" not in bundled_like.stderr


def test_a_run_frozen_at_its_cap_goes_on_after_a_cli_approval(tmp_path: Path, home: Path
                                                               ) -> None:
    """Frozen means frozen: the run waits, making no call, until a person decides elsewhere."""
    (home / "config.toml").write_text('[budget]\non_cap = "human"\npoll_s = 0.05\n'
                                      "max_step_tokens = 50000\n")
    budget_set(home, "session", "--tokens", "100")
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "run", "hello",
                             "--engine", scripted(tmp_path, [say("Paid for.")])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pending := report(home)["pending"]):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        assert all(s["spent_tokens"] == 0 for s in nothing_overspent(home).values())
        approved = whalebone("budget", "approve", pending[0]["session"], home=home)
        assert approved.returncode == 0, approved.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Paid for." in out, out + err


# --- chat, under its pilot ---------------------------------------------------------------------

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_chat_freezes_at_a_limit_set_with_budget_set_until_the_cli_decides(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tui_support import asking, screen_text, wait_for

    from whalebone.agent.cli import build_parser
    from whalebone.tui.cli import build_app
    from whalebone.tui.modals import BudgetApproval

    monkeypatch.setenv("WHALEBONE_HOME", str(home))
    budget_set(home, "session", "--tokens", "100")
    args = build_parser().parse_args(["chat", "--engine",
                                      scripted(tmp_path, [say("Never sent.")]),
                                      "--workspace", str(tmp_path)])
    app = build_app(args)
    app.budget_poll_s = 0.05
    app.runner.guard.policy = app.runner.guard.policy.model_copy(update={"poll_s": 0.05})
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(*"spend")
        app.prompt.submit()
        await wait_for(pilot, lambda: asking(app, BudgetApproval))  # frozen, asking a person
        sid = app.runner.session_id
        assert sid is not None
        denied = whalebone("budget", "deny", sid, "--reason", "not today", home=home)
        assert denied.returncode == 0, denied.stderr
        await wait_for(pilot, lambda: not app.running)
        # The modal closes and the decision taken elsewhere is shown.
        await wait_for(pilot, lambda: not isinstance(app.screen, BudgetApproval)
                       and "not today" in screen_text(app))
        assert "Never sent." not in screen_text(app)
    assert nothing_overspent(home)[f"session:{sid}"]["spent_tokens"] == 0


# --- a daemon job ------------------------------------------------------------------------------

def test_a_daemon_job_stops_at_a_limit_set_with_budget_set(tmp_path: Path, home: Path) -> None:
    engine = write_script(tmp_path / "d.json", appends(3, "Three."))
    write_config(home, engine=engine, tables={"agent": {"date_in_task": False,
                                                        "max_tokens": 64}})  # no [budget]
    budget_set(home, "session", "--tokens", "700")
    d = DaemonProc(home)
    try:
        job = d.submit("Append three lines.")
        done = d.wait_job(job["id"])
    finally:
        d.stop()
    assert done["status"] == "budget", done
    assert (home / "ws" / "log.txt").read_text().splitlines() == ["line-0"]
    session = nothing_overspent(home)[f"session:{done['session_id']}"]
    assert 0 < session["spent_tokens"] <= 700


def test_a_frozen_daemon_job_goes_on_after_a_cli_approval(tmp_path: Path, home: Path) -> None:
    engine = write_script(tmp_path / "d.json", appends(2, "Two."))
    write_config(home, engine=engine, tables={
        "agent": {"date_in_task": False, "max_tokens": 64},
        "budget": {"on_cap": "human", "max_step_tokens": 5000, "poll_s": 0.05}})
    budget_set(home, "session", "--tokens", "700")
    d = DaemonProc(home)
    try:
        job = d.submit("Append two lines.")
        frozen = d.wait_job(job["id"], statuses=("running",))
        deadline = time.monotonic() + 60
        while not d.job(job["id"])["pending_budget"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = whalebone("budget", "approve", frozen["session_id"] or d.job(job["id"])["session_id"],
                      home=home)
        assert r.returncode == 0, r.stderr
        done = d.wait_job(job["id"])
    finally:
        d.stop()
    assert done["status"] == "done", done
    assert Ledger(home / "budget.db").limit(f"session:{done['session_id']}").max_tokens == 5700


def test_a_limit_set_through_the_daemon_api_stops_the_next_cli_run(tmp_path: Path,
                                                                    home: Path) -> None:
    write_config(home, engine=write_script(tmp_path / "d.json", [say("Hi.")]))
    d = DaemonProc(home)
    try:
        r = d.client.post("/budget/limits", json={"scope": "day", "tokens": 500})
        assert r.status_code == 200, r.text
        assert r.json()["scope"].startswith("global:") and r.json()["max_tokens"] == 500
        for bad in ({"scope": "global", "usd": "lots"}, {"scope": "a b", "usd": 1},
                    {"scope": "global"}, {"scope": "global", "usd": -1},
                    {"scope": "global", "tokens": 5, "extra": 1}):
            refused = d.client.post("/budget/limits", json=bad)
            assert refused.status_code == 400, (bad, refused.text)
    finally:
        d.stop()
    run = whalebone("run", "hello", "--engine", scripted(tmp_path, [say("Hi.")]), home=home)
    assert run.returncode == EXIT_BUDGET and "limit 500 tokens" in run.stdout, run.stdout
    nothing_overspent(home)
