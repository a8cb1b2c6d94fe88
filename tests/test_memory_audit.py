from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from whalebone.memory.audit import AuditLog


def test_entries_are_appended_and_read_back_oldest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    log.append(who="agent:a", scope="s1", command="create", path="/memories/x", bytes=5)
    log.append(who="agent:b", scope="s2", command="view", path="../etc", result="refused",
               detail="leaves the root")
    log.append(who="agent:a", scope="s1", command="delete", path="/memories/x")
    rows = log.entries()
    assert [(e.who, e.scope, e.command, e.result) for e in rows] == [
        ("agent:a", "s1", "create", "ok"), ("agent:b", "s2", "view", "refused"),
        ("agent:a", "s1", "delete", "ok")]
    assert rows[0].bytes == 5 and rows[1].detail == "leaves the root"
    assert rows[0].at.year >= 2024 and rows[0].at_ns <= rows[1].at_ns
    assert [e.command for e in log.entries(scope="s1")] == ["create", "delete"]
    assert [e.scope for e in log.entries(who="agent:b")] == ["s2"]
    assert [e.command for e in log.entries(limit=1)] == ["delete"]
    log.close()


def test_unknown_result_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    with pytest.raises(ValueError, match="result must be one of"):
        log.append(who="a", scope="s", command="view", result="maybe")
    assert log.entries() == []


def test_hostile_values_are_stored_verbatim_and_capped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    evil = "'; drop table audit; --" + "\x00\x1b[2J" + "x" * 5000
    log.append(who=evil, scope=evil, command=evil, path=evil, detail=evil, result="refused")
    (e,) = log.entries()
    assert e.path == evil[:1000] and e.who == evil[:200] and e.command == evil[:50]


def test_several_processes_share_one_log(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    code = (
        "import sys\n"
        "from whalebone.memory.audit import AuditLog\n"
        "log = AuditLog(sys.argv[1])\n"
        "for i in range(50):\n"
        "    log.append(who=sys.argv[2], scope='s', command='view', path=str(i))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), f"p{n}"]) for n in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    rows = AuditLog(db).entries(limit=1000)
    assert len(rows) == 150
    assert len({e.id for e in rows}) == 150
    for n in range(3):
        assert [e.path for e in rows if e.who == f"p{n}"] == [str(i) for i in range(50)]
