"""``whalebone sessions compact ID`` as a person runs it: a real subprocess for the command, the
same entry point in-process for the cheap refusals; real SQLite stores and scripted engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agent_kit import call, say, script
from agent_kit import in_process as cli

from whalebone.agent.compaction import SUMMARY_HEADER, effective_history
from whalebone.agent.store import SessionStore

SUMMARY = "SUMMARY: listed the directory and read a.txt and b.txt; both say hi."


@pytest.fixture
def session(tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> str:
    """A finished session of three tool turns and an answer, in $WHALEBONE_HOME/sessions.db."""
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEBONE_ENGINE", raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("hi\n")
    (ws / "b.txt").write_text("hi\n")
    engine = script(tmp_path, "run.json", [
        call(("list_dir", {"path": "."}), reasoning="Look around."),
        call(("read_file", {"path": "a.txt"}), reasoning="Read a."),
        call(("read_file", {"path": "b.txt"}), reasoning="Read b."),
        say("Both files say hi.", reasoning="Answer."),
    ])
    code, out, err = cli(capsys, "run", "What do the files say?", "--engine", engine,
                         "--workspace", str(ws), "--quiet")
    assert code == 0, err
    return out.strip().rsplit("session ", 1)[1]


def test_compact_replaces_older_turns_by_the_engines_summary(
        tmp_path: Path, session: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    before = store.messages(session)
    engine = script(tmp_path, "summary.json", [say(SUMMARY, reasoning="Summarise.")])
    env = {**os.environ, "WHALEBONE_HOME": str(tmp_path)}
    env.pop("WHALEBONE_ENGINE", None)
    r = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", "sessions", "compact",
                        session, "--keep-recent", "2", "--engine", engine, "--json"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["type"] == "compacted" and report["hit_rate_after"] is None
    assert report["messages_before"] == len(before) and report["messages_after"] < len(before)
    assert 0 < report["tokens_after"] < report["tokens_before"]
    raw = store.messages(session)
    assert raw[:len(before)] == before and raw[-1]["role"] == "compaction"
    view = [m for _, m in effective_history(raw)]
    assert view[:2] == before[:2]  # the system prompt (with the tools) and the task
    assert view[2]["content"] == SUMMARY_HEADER + SUMMARY
    assert view[3:] == before[-3:]  # "Read b.", its result, the answer: verbatim
    assert [u.kind for u in store.usage(session)][-1] == "compaction"

    code, out, _ = cli(capsys, "sessions", "show", session)
    assert code == 0 and SUMMARY in out and "Look around." not in out
    resumed = script(tmp_path, "resume.json", [say("Still hi.")])
    code, out, err = cli(capsys, "sessions", "resume", session, "And now?", "--engine", resumed,
                         "--quiet")
    assert code == 0 and out.startswith("Still hi."), err


def test_compact_exit_codes_and_the_session_left_as_it_was(
        tmp_path: Path, session: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = SessionStore(tmp_path / "sessions.db")
    before = store.messages(session)
    good = script(tmp_path, "summary.json", [say(SUMMARY)])
    code, _, err = cli(capsys, "sessions", "compact", "nosuchsession", "--engine", good)
    assert code == 2 and "no session" in err
    code, _, err = cli(capsys, "sessions", "compact", session, "--engine", good,
                       "--keep-recent", "4")
    assert code == 2 and "too few turns" in err
    code, _, err = cli(capsys, "sessions", "compact", session, "--engine", good,
                       "--keep-recent", "0")
    assert code == 2 and "keep_recent" in err
    code, _, err = cli(capsys, "sessions", "compact", session, "--engine", "nonsense:1")
    assert code == 5 and "cannot open the engine" in err
    with store.open(session):
        code, _, err = cli(capsys, "sessions", "compact", session, "--engine", good)
    assert code == 6 and "another process" in err
    rambling = script(tmp_path, "rambling.json", ["I will not stop"])  # no EOS: cut off
    code, _, err = cli(capsys, "sessions", "compact", session, "--engine", rambling,
                       "--keep-recent", "2")
    assert code == 1 and "no usable summary" in err
    (tmp_path / "tight.toml").write_text(
        f'[budget]\nledger = "{tmp_path / "ledger.db"}"\nsession_tokens = 50\n'
        'on_cap = "deny"\n')
    code, _, err = cli(capsys, "sessions", "compact", session, "--engine", good, "--config",
                       str(tmp_path / "tight.toml"), "--keep-recent", "2")
    assert code == 4 and "budget guard refused" in err
    assert store.messages(session) == before
    code, out, err = cli(capsys, "sessions", "compact", session, "--engine", good,
                         "--keep-recent", "1")
    assert code == 0, err
    assert f"compacted session {session}: 9 → 4 messages" in out and "prompt tokens" in out
