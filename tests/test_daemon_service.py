"""The daemon as a real subprocess: jobs through the API, SIGTERM and SIGKILL mid-run with a
restart (nothing lost, nothing run twice), heartbeats that stay idle, schedules stopped by
their budget, SIGHUP, and a second daemon refused."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_kit import DaemonProc, appends, wait_for, write_config, write_script

from whalebone.dsml import emit_completion


def lines(home: Path) -> list[str]:
    log = home / "ws" / "log.txt"
    return log.read_text().splitlines() if log.exists() else []


def model_calls(home: Path) -> int:
    db = home / "sessions.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_a_job_submitted_over_the_api_runs_to_its_answer_and_logs_json_lines(home: Path
                                                                               ) -> None:
    engine = write_script(home.parent / "s.json", appends(2, "Two lines."))
    write_config(home, engine=engine)
    d = DaemonProc(home)
    try:
        job = d.submit("Append two lines.")
        assert job["status"] == "queued"
        done = d.wait_job(job["id"])
        assert done["status"] == "done" and done["answer"] == "Two lines."
        assert done["steps"] == 3 and done["prompt_tokens"] > 0
        assert done["cache_hit_tokens"] > 0  # turns 2 and 3 extend turn 1's prompt
        assert lines(home) == ["line-0", "line-1"]
    finally:
        d.stop()
    assert d.proc.returncode == 0
    events = d.log_events()
    calls = [e for e in events if e["event"] == "model_call"]
    assert len(calls) == 3
    assert {"job", "session", "step", "prompt_tokens", "cache_hit_tokens", "price",
            "ts"} <= set(calls[0])
    assert [c["step"] for c in calls] == [1, 2, 3]
    finished = next(e for e in events if e["event"] == "job_finished")
    assert finished["status"] == "done" and finished["session"] == done["session_id"]


def _interrupt_and_resume(home: Path, signum: int) -> tuple[dict, DaemonProc]:
    n = 6
    engine = write_script(home.parent / "s.json", appends(n, "Six lines."))
    write_config(home, engine=engine, engine_options={"delay": 0.008})
    d = DaemonProc(home)
    job = d.submit("Append six lines, one per step.")
    wait_for(lambda: len(lines(home)) >= 2, 60, "two lines")
    d.signal(signum)
    code = d.wait_exit(30)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    before = lines(home)
    assert 2 <= len(before) < n  # stopped mid-run
    d2 = DaemonProc(home)
    done = d2.wait_job(job["id"])
    return done, d2


def test_sigterm_drains_to_a_checkpoint_and_a_restart_resumes_the_job(home: Path) -> None:
    done, d = _interrupt_and_resume(home, signal.SIGTERM)
    try:
        assert done["status"] == "done" and done["answer"] == "Six lines."
        assert lines(home) == [f"line-{k}" for k in range(6)]  # each once, in order
        assert done["attempts"] == 2
        events = d.log_events()
        assert any(e["event"] == "draining" and e["signal"] == "SIGTERM" for e in events)
        interrupted = [e for e in events if e["event"] == "job_finished"
                       and e["status"] == "queued"]
        assert interrupted and interrupted[0]["reason"] == "interrupted"
        # A clean drain: no call was cut short, so the model was never told of one.
        assert not any(e.get("type") == "warning" and e.get("kind") == "interrupted_call"
                       for e in _job_events(d, done["id"]))
        _steps_agree(home, d, done)
    finally:
        d.stop()


def test_sigkills_at_random_moments_lose_nothing_and_run_nothing_twice(home: Path) -> None:
    rng = random.Random(1123)
    n = 6
    engine = write_script(home.parent / "s.json", appends(n, "Six lines."))
    write_config(home, engine=engine, engine_options={"delay": 0.004}, max_crashes=10)
    d = DaemonProc(home)
    jid = d.submit("Append six lines, one per step.")["id"]
    kills = 0
    while d.job(jid)["status"] != "done" and kills < 2:
        time.sleep(rng.uniform(0.05, 0.6))  # anywhere: in a model call, a tool, a commit
        d.signal(signal.SIGKILL)
        d.wait_exit(30)
        kills += 1
        d = DaemonProc(home)
    try:
        done = d.wait_job(jid)
        assert done["status"] == "done" and done["answer"] == "Six lines."
        assert lines(home) == [f"line-{k}" for k in range(n)]  # none lost, none twice
        assert done["crashes"] == done["attempts"] - 1 >= 1  # every restart resumed it
        restart = [e for e in d.log_events() if e["event"] == "started"][1]
        assert restart["resumed_jobs"] == [jid]
        _steps_agree(home, d, done)
        calls = model_calls(home)
    finally:
        d.stop()
    d = DaemonProc(home)  # a finished job is never run again
    try:
        time.sleep(0.3)
        assert d.job(jid)["status"] == "done" and model_calls(home) == calls
    finally:
        d.stop()


def _job_events(d: DaemonProc, jid: str) -> list[dict]:
    with d.client.stream("GET", f"/jobs/{jid}/events") as r:
        body = "".join(r.iter_text())
    out = []
    for frame in body.split("\n\n"):
        data = [ln[6:] for ln in frame.splitlines() if ln.startswith("data: ")]
        if data:
            out.append(json.loads(data[0]))
    return out


def test_an_idle_heartbeat_calls_no_model_over_many_ticks_and_runs_once_on_a_change(
        home: Path) -> None:
    engine = write_script(home.parent / "s.json", [emit_completion("Read the new mail.",
                                                                   reasoning="ok")])
    write_config(home, engine=engine, schedules=[
        {"name": "inbox", "every": 0.05, "watch": ["inbox/*"], "task": "Read new mail."}])
    (home / "ws" / "inbox").mkdir(parents=True)
    (home / "ws" / "inbox" / "a.txt").write_text("old")
    d = DaemonProc(home)
    try:
        def state() -> dict:
            return d.client.get("/schedules").json()["schedules"][0]["state"]

        wait_for(lambda: state()["idle_ticks"] >= 25, 60, "25 idle ticks")
        assert model_calls(home) == 0
        assert d.client.get("/jobs").json()["jobs"] == []
        (home / "ws" / "inbox" / "b.txt").write_text("new mail")
        job = wait_for(lambda: d.client.get("/jobs").json()["jobs"], 30, "a job")[0]
        assert job["schedule"] == "inbox"
        assert d.wait_job(job["id"])["status"] == "done"
        idle = state()["idle_ticks"]
        wait_for(lambda: state()["idle_ticks"] >= idle + 10, 60, "10 more idle ticks")
        assert len(d.client.get("/jobs").json()["jobs"]) == 1
        assert model_calls(home) == 1
    finally:
        d.stop()


def test_a_schedule_that_exhausts_its_budget_stops_and_says_why(home: Path) -> None:
    engine = write_script(home.parent / "s.json", [emit_completion("Nothing new.",
                                                                   reasoning="ok")])
    write_config(home, engine=engine, tables={
        "agent": {"date_in_task": False, "max_tokens": 32},
        "budget": {"on_cap": "deny"}},
        schedules=[{"name": "digest", "every": 0.05, "task": "Write the digest.",
                    "budget_tokens": 1200}])
    d = DaemonProc(home)
    try:
        def schedule() -> dict:
            return d.client.get("/schedules").json()["schedules"][0]["state"]

        stopped = wait_for(lambda: (s := schedule())["status"] == "stopped" and s, 60,
                           "the schedule to stop")
        assert "schedule:digest" in stopped["reason"] and "denied" in stopped["reason"]
        jobs = d.client.get("/jobs").json()["jobs"]
        assert jobs[0]["status"] == "budget" and jobs[0]["message"] == stopped["reason"]
        assert all(j["status"] == "done" for j in jobs[1:]) and len(jobs) >= 2
        ticks = schedule()["ticks"]
        time.sleep(0.5)  # ten periods: a stopped schedule ticks no more and submits nothing
        assert schedule()["ticks"] == ticks
        assert len(d.client.get("/jobs").json()["jobs"]) == len(jobs)
        assert any(e["event"] == "schedule_stopped" for e in d.log_events())
    finally:
        d.stop()
    out = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "jobs", "schedules",
                          "--config", str(home / "daemon.toml")], capture_output=True,
                         text=True, env={**os.environ, "WHALEBONE_HOME": str(home)})
    assert "digest" in out.stdout and "stopped" in out.stdout and "denied" in out.stdout


def test_sighup_reloads_the_config_reopens_the_log_and_a_broken_config_is_refused(
        home: Path) -> None:
    engine = write_script(home.parent / "s.json", appends(0))
    config = write_config(home, engine=engine, concurrency=1)
    d = DaemonProc(home)
    try:
        assert d.client.get("/health").json()["concurrency"] == 1
        write_config(home, engine=engine, concurrency=3)
        (home / "daemon.log").rename(home / "daemon.log.1")  # as logrotate does
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.client.get("/health").json()["concurrency"] == 3, 30, "reload")
        wait_for(lambda: any(e["event"] == "reloaded" for e in d.log_events()), 30,
                 "the reopened log")
        assert '"started"' in (home / "daemon.log.1").read_text()
        config.write_text("concurrency = 'many'\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: any(e["event"] == "reload_failed" for e in d.log_events()), 30,
                 "reload_failed")
        assert d.client.get("/health").json()["concurrency"] == 3  # the old config stays
        second = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "daemon",
                                 "--config", str(home / "other.toml")], capture_output=True,
                                text=True, timeout=60,
                                env={**os.environ, "WHALEBONE_HOME": str(home)})
        assert second.returncode == 2 and "no daemon config" in second.stderr
    finally:
        d.stop()


def test_a_second_daemon_on_the_same_queue_refuses_to_start(home: Path) -> None:
    engine = write_script(home.parent / "s.json", appends(0))
    write_config(home, engine=engine)
    d = DaemonProc(home)
    try:
        second = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "daemon",
                                 "--config", str(home / "daemon.toml")], capture_output=True,
                                text=True, timeout=60,
                                env={**os.environ, "WHALEBONE_HOME": str(home)})
        assert second.returncode == 1
        assert any(e["event"] == "start_failed" and "another daemon" in e["message"]
                   for e in d.log_events())
        assert d.client.get("/health").json()["status"] == "ok"
    finally:
        d.stop()


def test_a_job_that_never_reaches_a_checkpoint_is_cut_off_after_the_grace_period(
        home: Path) -> None:
    engine = write_script(home.parent / "s.json", appends(2, "Two lines."))
    # The second turn does not fit the session's tokens: the job freezes for a person, so it
    # reaches no checkpoint; draining must still end within the grace period. (A session
    # limit, not a run limit: a job is one session, and each restart is a new run.)
    write_config(home, engine=engine, grace=2, tables={
        "agent": {"date_in_task": False, "max_tokens": 64},
        "budget": {"session_tokens": 700, "on_cap": "human", "max_step_tokens": 5000}})
    d = DaemonProc(home)
    job = d.submit("Append two lines.")
    wait_for(lambda: d.job(job["id"])["pending_budget"], 60, "the job to freeze")
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    wait_for(lambda: d.client.get("/health").json()["status"] == "draining", 10, "draining")
    refused = d.client.post("/jobs", json={"task": "more"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert d.wait_exit(30) == 0
    assert time.monotonic() - started < 10
    assert any(e["event"] == "job_cut_off" for e in d.log_events())
    d2 = DaemonProc(home)
    try:
        frozen = wait_for(lambda: (j := d2.job(job["id"]))["pending_budget"] and j, 60,
                          "the resumed job to freeze again")
        assert frozen["attempts"] == 2 and lines(home) == ["line-0"]
        r = d2.client.post(f"/jobs/{job['id']}/budget", json={"decision": "approve"})
        assert r.status_code == 200
        done = d2.wait_job(job["id"])
        assert done["status"] == "done" and lines(home) == ["line-0", "line-1"]
    finally:
        d2.stop()


def test_jobs_run_at_most_concurrency_at_once(home: Path) -> None:
    engine = write_script(home.parent / "s.json", [emit_completion(
        "A long enough answer to take a while.", reasoning="Thinking it over slowly.")])
    write_config(home, engine=engine, engine_options={"delay": 0.01}, concurrency=2)
    d = DaemonProc(home)
    try:
        ids = [d.submit(f"Task {i}.")["id"] for i in range(5)]
        for jid in ids:
            assert d.wait_job(jid)["status"] == "done"
    finally:
        d.stop()
    running, peak, order = 0, 0, []
    for e in d.log_events():
        if e["event"] == "job_started":
            running += 1
            order.append(e["job"])
        elif e["event"] == "job_finished":
            running -= 1
        peak = max(peak, running)
    assert peak == 2  # the limit was used, and never passed
    assert order == ids  # oldest first


def _steps_agree(home: Path, d: DaemonProc, job: dict) -> None:
    """Across restarts, `jobs list`'s count, the event stream and the session agree: 6 appends
    and an answer are 7 model turns, however many attempts made them."""
    from whalebone.agent.store import SessionStore

    store = SessionStore(home / "sessions.db")
    turns = sum(1 for m in store.messages(job["session_id"]) if m["role"] == "assistant")
    store.close()
    events = _job_events(d, job["id"])
    last_done = [e for e in events if e.get("type") == "done"][-1]
    assert job["steps"] == turns == 7
    assert max(e["step"] for e in events if e.get("type") == "step") == 7
    assert last_done["steps"] == 7
