"""Schedules and heartbeats: cron expressions, intervals, pre-checks that keep an idle agent at
zero calls, no overlapping ticks, and stopped schedules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.agent.daemon.config import DaemonConfigError, ScheduleConfig, parse_duration
from whalebone.agent.daemon.jobs import JobQueue
from whalebone.agent.daemon.scheduler import Cron, Scheduler, fingerprint


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize("expr, after, expected", [
    ("*/15 * * * *", "2026-11-23 17:07:30", "2026-11-23 17:15"),
    ("0 9 * * *", "2026-11-23 09:00:00", "2026-11-24 09:00"),  # strictly after
    ("30 8-18/2 * * 1-5", "2026-11-27 18:31:00", "2026-11-30 08:30"),  # Fri evening → Mon
    ("0 0 1 * *", "2026-12-15 00:00:00", "2027-01-01 00:00"),
    ("0 12 * * 0", "2026-11-23 00:00:00", "2026-11-29 12:00"),  # Sunday as 0
    ("0 12 * * 7", "2026-11-23 00:00:00", "2026-11-29 12:00"),  # and as 7
    ("0 0 13 * 5", "2026-11-23 00:00:00", "2026-11-27 00:00"),  # day OR weekday, as cron
    ("5,10 3 29 2 *", "2026-03-01 00:00:00", "2028-02-29 03:05"),  # leap day
])
def test_cron_finds_the_next_matching_minute_in_utc(expr: str, after: str,
                                                   expected: str) -> None:
    assert iso(Cron(expr).next_after(ts(after))) == expected


@pytest.mark.parametrize("expr", ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *",
                                  "a * * * *", "5-1 * * * *", "0 0 31 2 *"])
def test_a_bad_cron_expression_is_a_clear_error(expr: str) -> None:
    with pytest.raises(DaemonConfigError, match="cron"):
        Cron(expr).next_after(ts("2026-01-01 00:00:00"))


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("90", 90.0), ("15m", 900.0),
                                            ("2h", 7200.0), ("1d", 86400.0),
                                            ("500ms", 0.5), ("0.5s", 0.5)])
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", 0, "0s", True])
def test_bad_durations_are_refused(value: Any) -> None:
    with pytest.raises(DaemonConfigError):
        parse_duration(value)


class Recorder:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.submitted: list[str] = []
        self.logs: list[dict[str, Any]] = []

    def submit(self, s: ScheduleConfig) -> None:
        self.submitted.append(s.name)
        self.queue.submit(s.task, schedule=s.name)

    def log(self, event: str, **fields: Any) -> None:
        self.logs.append({"event": event, **fields})


def ticker(tmp_path: Path) -> tuple[Scheduler, Recorder, JobQueue]:
    queue = JobQueue(tmp_path / "jobs.db")
    rec = Recorder(queue)
    return Scheduler(queue, rec.submit, rec.log), rec, queue


def run_ticks(sched: Scheduler, schedules: list[ScheduleConfig], ws: Path,
              times: list[float]) -> None:
    async def go() -> None:
        for t in times:
            await sched.tick(schedules, ws, now=t)

    anyio.run(go)


def test_an_interval_schedule_submits_once_per_period_and_never_overlaps(tmp_path: Path
                                                                         ) -> None:
    sched, rec, queue = ticker(tmp_path)
    s = ScheduleConfig(name="digest", every="10s", task="Write the digest.")
    run_ticks(sched, [s], tmp_path, [0, 5, 10, 15])
    assert rec.submitted == ["digest"]  # due at 10; at 15 nothing is due
    run_ticks(sched, [s], tmp_path, [20])  # due, but the job at 10 is still queued
    assert rec.submitted == ["digest"]
    assert rec.logs[-1]["outcome"] == "busy"
    for job in queue.list():
        queue.claim()
        queue.finish(job.id, "done")
    run_ticks(sched, [s], tmp_path, [30])
    assert rec.submitted == ["digest", "digest"]


def test_an_idle_heartbeat_submits_nothing_over_many_ticks(tmp_path: Path) -> None:
    sched, rec, queue = ticker(tmp_path)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.txt").write_text("one")
    s = ScheduleConfig(name="inbox", every=1, watch=["inbox/*"], task="Read new mail.")
    run_ticks(sched, [s], tmp_path, [float(t) for t in range(200)])
    state = queue.schedule_state("inbox")
    assert rec.submitted == [] and state.ticks == 200 and state.idle_ticks == 200
    (tmp_path / "inbox" / "b.txt").write_text("two")
    run_ticks(sched, [s], tmp_path, [200.0, 201.0])
    assert rec.submitted == ["inbox"]  # the change, once
    assert queue.schedule_state("inbox").runs == 1


def test_a_heartbeat_on_a_command_runs_when_its_output_changes(tmp_path: Path) -> None:
    sched, rec, _ = ticker(tmp_path)
    (tmp_path / "head").write_text("abc")
    s = ScheduleConfig(name="ci", every=1, check="cat head", task="Check CI.", run_first=True)
    run_ticks(sched, [s], tmp_path, [0.0])
    assert rec.submitted == ["ci"]  # run_first: the first tick runs
    rec.queue.finish(rec.queue.list()[0].id, "done")
    run_ticks(sched, [s], tmp_path, [1.0, 2.0])
    assert rec.submitted == ["ci"]
    (tmp_path / "head").write_text("def")
    run_ticks(sched, [s], tmp_path, [3.0])
    assert rec.submitted == ["ci", "ci"]


def test_fingerprints_see_sizes_names_and_exit_status(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    watch = ScheduleConfig(name="w", every=1, watch=["*"], task="t")
    first = fingerprint(watch, tmp_path)
    (tmp_path / "b").write_text("")
    assert fingerprint(watch, tmp_path) != first
    ok = ScheduleConfig(name="c", every=1, check="true", task="t")
    bad = ScheduleConfig(name="c", every=1, check="false", task="t")
    assert fingerprint(ok, tmp_path) != fingerprint(bad, tmp_path)


def test_a_stopped_schedule_does_nothing_until_resumed(tmp_path: Path) -> None:
    sched, rec, queue = ticker(tmp_path)
    s = ScheduleConfig(name="digest", every=1, task="t")
    run_ticks(sched, [s], tmp_path, [0.0])  # first sight: due one period later
    queue.stop_schedule("digest", "budget stop")
    run_ticks(sched, [s], tmp_path, [5.0, 6.0, 7.0])
    assert rec.submitted == [] and queue.schedule_state("digest").ticks == 0
    queue.resume_schedule("digest")
    run_ticks(sched, [s], tmp_path, [8.0])
    assert rec.submitted == ["digest"]


def test_schedule_configs_are_checked(tmp_path: Path) -> None:
    from pydantic import ValidationError

    for bad in ({"name": "x", "task": "t"}, {"name": "x", "task": "t", "every": 1,
                                              "cron": "* * * * *"},
                {"name": "x y", "task": "t", "every": 1}, {"name": "x", "task": " ",
                                                            "every": 1},
                {"name": "x", "task": "t", "cron": "* *"},
                {"name": "x", "task": "t", "every": 1, "colour": 1}):
        with pytest.raises((ValidationError, DaemonConfigError)):
            ScheduleConfig.model_validate(bad)
    assert ScheduleConfig(name="x", task="t", cron="0 * * * *").heartbeat is False
