"""The approval log: every decision a person made, one JSON line each, in order."""

from __future__ import annotations

import json
from pathlib import Path

from whalebone.tui.approvals import ApprovalLog, ApprovalRecord


def test_decisions_are_appended_in_order_and_read_back(tmp_path: Path) -> None:
    log = ApprovalLog(tmp_path / "deep" / "approvals.jsonl")
    log.append(ApprovalRecord(kind="shell", subject="rm -rf build", approved=False,
                              reason="not now", session="s1"))
    log.append(ApprovalRecord(kind="budget", subject="session:s1 +0.5 usd", approved=True,
                              amount=0.5))
    records = ApprovalLog(tmp_path / "deep" / "approvals.jsonl").records()
    assert [(r.kind, r.approved, r.reason) for r in records] == [
        ("shell", False, "not now"), ("budget", True, "")]
    assert records[1].amount == 0.5 and records[0].time <= records[1].time
    lines = (tmp_path / "deep" / "approvals.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["subject"] == "rm -rf build"


def test_a_log_that_was_never_written_is_empty(tmp_path: Path) -> None:
    assert ApprovalLog(tmp_path / "none.jsonl").records() == []
