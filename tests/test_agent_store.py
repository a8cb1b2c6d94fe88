from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from whalebone.agent.store import SessionBusy, SessionError, SessionStore, UsageRecord


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "sessions.db")


def test_sessions_messages_and_usage_persist(store: SessionStore, tmp_path: Path) -> None:
    sid = store.create(title="first", config={"thinking": "thinking"})
    with store.open(sid) as s:
        s.append({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"})
        s.record_usage(UsageRecord(engine="local", prompt_tokens=10, cache_hit_tokens=8,
                                   cache_miss_tokens=2, completion_tokens=3, price=1e-6))
    again = SessionStore(tmp_path / "sessions.db")
    assert again.messages(sid) == [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "yo"}]
    assert again.usage(sid)[0].cache_hit_tokens == 8
    assert again.config(sid) == {"thinking": "thinking"}
    again.rename(sid, "renamed")
    assert [(i.id, i.title, i.messages) for i in again.list()] == [(sid, "renamed", 2)]
    again.delete(sid)
    with pytest.raises(SessionError, match="no session"):
        again.info(sid)


def test_one_writer_per_session(store: SessionStore) -> None:
    sid = store.create()
    with store.open(sid):
        with pytest.raises(SessionBusy):
            store.open(sid)
        with pytest.raises(SessionBusy):
            store.delete(sid)
    with store.open(sid) as s:  # released on close
        s.append({"role": "user", "content": "x"})
    with pytest.raises(SessionError, match="closed"):
        s.append({"role": "user", "content": "late"})


def test_journal_marks_calls_and_refuses_a_second_start(store: SessionStore) -> None:
    sid = store.create()
    with store.open(sid) as s:
        assert s.call_started("c1", "write_file", {"path": "a"}, idempotent=False)
        assert not s.call_started("c1", "write_file", {"path": "a"}, idempotent=False)
        assert s.call_started("c2", "read_file", {"path": "b"}, idempotent=True)
        s.call_finished("c2", "contents", is_error=False)
        assert [e.call_id for e in s.unfinished_calls()] == ["c1"]
        s.call_finished("c1", "interrupted", is_error=True, status="interrupted")
        assert s.unfinished_calls() == []
    assert [e.status for e in store.journal(sid)] == ["interrupted", "finished"]


WRITER = textwrap.dedent("""
    import sys
    from whalebone.agent.store import SessionStore
    store = SessionStore(sys.argv[1])
    with store.open(sys.argv[2]) as s:
        print("locked", flush=True)
        i = 0
        while True:
            s.append({"role": "user", "content": str(i)})
            i += 1
""")


def test_kill_9_loses_no_committed_message_and_frees_the_lock(store: SessionStore) -> None:
    sid = store.create()
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), sid],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        time.sleep(0.05 + 0.1 * trial)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        contents = [int(m["content"]) for m in store.messages(sid)]
        starts = [i for i, c in enumerate(contents) if c == 0]
        assert len(starts) == trial + 1  # every writer's messages are there...
        for a, b in zip(starts, [*starts[1:], len(contents)], strict=True):
            assert contents[a:b] == list(range(b - a))  # ...in order, with no gap
        with store.open(sid):  # the dead writer's lock is gone
            pass
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_in_memory_store_leaves_no_files_behind(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SessionStore(":memory:")
    sid = store.create()
    with store.open(sid) as s:
        s.append({"role": "user", "content": "hi"})
        with pytest.raises(SessionBusy):
            store.open(sid)
    assert store.messages(sid) == [{"role": "user", "content": "hi"}]
    assert list(tmp_path.iterdir()) == []


def test_a_unique_prefix_names_a_session_like_a_short_git_hash(store: SessionStore) -> None:
    with store._tx() as db:  # ids chosen so that two share a prefix
        for sid in ("75f9a1000000", "75f9b2000000", "8c01d3000000"):
            db.execute("INSERT INTO sessions (id, title, agent, config, created, updated) "
                       "VALUES (?, '', 'default', '{}', 0, 0)", (sid,))
    assert store.resolve("8c") == "8c01d3000000"
    assert store.resolve("75f9b") == "75f9b2000000"
    assert store.resolve("75f9a1000000") == "75f9a1000000"
    with pytest.raises(SessionError, match=r"ambiguous.*75f9a1000000, 75f9b2000000"):
        store.resolve("75f9")
    for missing in ("", "9", "75f9%", "75f9_"):  # no LIKE wildcards, no empty prefix
        with pytest.raises(SessionError, match="no session"):
            store.resolve(missing)
