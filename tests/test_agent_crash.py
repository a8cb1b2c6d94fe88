"""kill -9 at random points of a real run, over many trials: no committed turn is ever lost or
rewritten, no side-effecting call runs twice, and the session always resumes to the end."""

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

TESTS = Path(__file__).resolve().parent
STEPS = 8

WORKER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import anyio
from agent_kit import agent, call, file_tools, say
from whalebone.engine.scripted import ScriptedEngine

root, steps = Path(sys.argv[1]), int(sys.argv[2])
TASK = "Append the lines, one per step."

def script(req):
    k = req.prompt.count('invoke name="append_line"')
    if k >= steps:
        return say(f"Appended {k} lines.")
    return call(("append_line", {"line": f"line-{k}"}), ("count_lines", {}),
                reasoning=f"Step {k}: append and count.")

tools = file_tools(root)
a = agent(ScriptedEngine(script, delta_chars=8, delay=0.002), root, tools=tools,
          max_steps=100, loop_limit=1000)
sid_file = root / "sid"
if sid_file.exists():
    sid = sid_file.read_text()
else:
    sid = a.store.create(title="crash test")
    sid_file.write_text(sid)
task = None if any(m.get("role") == "user" for m in a.store.messages(sid)) else TASK
print("ready", flush=True)
done = a.run_sync(task, session_id=sid)
print(done.reason, flush=True)
sys.exit(0 if done.reason == "answer" else 3)
"""


def snapshot(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [m for (m,) in con.execute("SELECT message FROM messages ORDER BY seq")]
    finally:
        con.close()


def start(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(STEPS), str(TESTS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_kill_9_at_random_points_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("WHALEBONE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    db = tmp_path / "sessions.db"
    committed: list[str] = []
    kills = 0
    for _ in range(40):
        proc = start(tmp_path)
        if kills < 8:
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        proc.wait(timeout=60)
        now = snapshot(db) if db.exists() else []
        assert now[:len(committed)] == committed, f"a committed message was lost (seed {seed})"
        committed = now
        if proc.returncode == 0:
            break
    else:
        pytest.fail("the session never finished")
    assert kills >= 4, f"the kills landed after the runs (seed {seed})"
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)), f"a side effect ran twice (seed {seed}): {lines}"
    assert set(lines) <= {f"line-{k}" for k in range(STEPS)}
    con = sqlite3.connect(db)
    journal = con.execute("SELECT call_id, name, status, arguments FROM tool_calls").fetchall()
    con.close()
    appends = [(cid, st, json.loads(a)["line"]) for cid, n, st, a in journal
               if n == "append_line"]
    assert all(st in ("finished", "interrupted") for _, st, _ in appends)
    finished = {line for _, st, line in appends if st == "finished"}
    assert finished <= set(lines)  # a finished call's effect is there
    messages = [json.loads(m) for m in committed]
    assert messages[-1]["role"] == "assistant" and "Appended" in messages[-1]["content"]
    call_ids = [tc["id"] for m in messages for tc in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in messages if m.get("role") == "tool"]
    assert sorted(call_ids) == sorted(results)  # every call got exactly one result


def _first_session(db: Path) -> str | None:
    if not db.exists():
        return None
    con = sqlite3.connect(db, timeout=5)
    try:
        row = con.execute("SELECT id FROM sessions").fetchone()
    except sqlite3.OperationalError:
        return None  # the schema is being made
    finally:
        con.close()
    return None if row is None else row[0]


def _cli(home: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Delays (s) after the session row appears: the first ~90 ms of a run, when it had a session
# but had not yet written its task.
EARLY = [0.0, 0.003, 0.01, 0.02, 0.04, 0.09]


def test_a_run_killed_in_its_first_moments_never_loses_its_task(tmp_path: Path) -> None:
    from agent_kit import say, script

    engine = script(tmp_path, "answer.json", [say("Finished the task.")])
    lost = []
    for trial, delay in enumerate(EARLY):
        home = tmp_path / f"t{trial}"
        db = home / "sessions.db"
        task = f"Write the report number {trial}."
        proc = _cli(home, "run", task, "--engine", engine, "--store", str(db), "--no-tools")
        deadline = time.monotonic() + 60
        while (sid := _first_session(db)) is None and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never made its session"
            time.sleep(0.0005)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        if sid is None:
            continue  # killed before the session existed: no task was ever accepted
        resumed = _cli(home, "sessions", "resume", sid, "--engine", engine, "--store", str(db),
                       "--no-tools")
        out, err = resumed.communicate(timeout=120)
        messages = [json.loads(m) for m in snapshot(db)]
        users = [m["content"] for m in messages if m.get("role") == "user"]
        if not (users and users[0].startswith(task)):
            lost.append((delay, out + err))
            continue
        assert resumed.returncode == 0, err
        # Completed, by the resume or by the run itself when the kill came after its end.
        assert messages[-1]["role"] == "assistant"
        assert "Finished the task." in messages[-1]["content"]
    assert not lost, f"tasks lost after kills at {[d for d, _ in lost]}: {lost[0][1][-300:]}"
