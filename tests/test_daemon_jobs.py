"""The SQLite job queue: submission checks, atomic claims across processes, cancellation,
requeueing after a crash, events and schedule state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from whalebone.agent.daemon.jobs import JobError, JobQueue
from whalebone.core.errors import WhaleboneError


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "jobs.db")


@pytest.mark.parametrize("task, options, needle", [
    ("", {}, "non-empty"), ("   ", {}, "non-empty"), (None, {}, "non-empty"),
    ("x", {"temperature": 1}, "unknown job options"),
    ("x", {"max_steps": 0}, "max_steps"), ("x", {"thinking": "deep"}, "thinking")])
def test_a_bad_submission_is_refused_and_nothing_is_queued(queue: JobQueue, task: object,
                                                           options: dict, needle: str) -> None:
    with pytest.raises(JobError, match=needle) as info:
        queue.submit(task, options=options)  # type: ignore[arg-type]
    assert isinstance(info.value, WhaleboneError)
    assert queue.list() == []


def test_jobs_are_claimed_oldest_first_and_only_once(queue: JobQueue) -> None:
    ids = [queue.submit(f"task {i}").id for i in range(3)]
    claimed = [queue.claim() for _ in range(4)]
    assert [j.id if j else None for j in claimed] == [*ids, None]
    assert all(j.status == "running" and j.attempts == 1 for j in claimed if j)
    assert [j.id for j in queue.list()] == ids[::-1]  # most recent first


CLAIMER = """
import sys
from whalebone.agent.daemon.jobs import JobQueue
q = JobQueue(sys.argv[1])
while (job := q.claim()) is not None:
    print(job.id, flush=True)
"""


def test_processes_claiming_at_once_never_take_the_same_job(queue: JobQueue) -> None:
    ids = {queue.submit(f"task {i}").id for i in range(40)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(queue.path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    taken = [line for p in procs for line in p.communicate(timeout=120)[0].split()]
    assert sorted(taken) == sorted(ids)  # every job once, none twice


def test_cancel_stops_a_queued_job_and_flags_a_running_one(queue: JobQueue) -> None:
    running = queue.submit("a")
    waiting = queue.submit("b")
    assert queue.claim().id == running.id  # type: ignore[union-attr]
    assert queue.cancel(waiting.id).status == "cancelled"
    flagged = queue.cancel(running.id)
    assert flagged.status == "running" and flagged.cancel
    assert queue.cancel_requested([running.id, "other"]) == [running.id]
    assert queue.claim() is None  # the cancelled job never starts
    queue.finish(running.id, "done", reason="answer", answer="ok", steps=2)
    assert queue.cancel(running.id).status == "done"  # a finished job stays finished
    with pytest.raises(JobError, match="no job"):
        queue.cancel("nope")


def test_jobs_left_running_by_a_dead_daemon_are_queued_again(queue: JobQueue) -> None:
    job = queue.submit("a")
    queue.claim()
    queue.set_session(job.id, "s1")
    assert queue.requeue_running(max_crashes=1) == ([job.id], [])
    again = queue.claim()
    assert again is not None and again.id == job.id
    assert again.attempts == 2 and again.session_id == "s1"  # it resumes its session
    assert again.crashes == 1


def test_a_job_running_at_every_crash_is_given_up_after_max_crashes(queue: JobQueue) -> None:
    job = queue.submit("a")
    for _ in range(2):
        queue.claim()
        assert queue.requeue_running(max_crashes=2) == ([job.id], [])
    queue.claim()
    assert queue.requeue_running(max_crashes=2) == ([], [job.id])
    failed = queue.get(job.id)
    assert failed.status == "failed" and failed.reason == "crashed"
    assert "died 3 times" in failed.message and queue.claim() is None


def test_finishing_records_the_outcome_and_usage_adds_up(queue: JobQueue) -> None:
    job = queue.submit("a", options={"max_steps": 3})
    queue.claim()
    queue.add_usage(job.id, prompt_tokens=100, cache_hit_tokens=60, completion_tokens=10,
                    price=0.5)
    queue.add_usage(job.id, prompt_tokens=120, cache_hit_tokens=100, completion_tokens=5,
                    price=0.25)
    queue.finish(job.id, "queued", reason="interrupted", steps=1)
    mid = queue.get(job.id)
    assert mid.status == "queued" and mid.finished is None and not mid.terminal
    queue.claim()
    # steps is the job's total over its attempts (the session's turns): set, never lowered
    queue.finish(job.id, "done", reason="answer", answer="42", steps=3)
    queue.finish(job.id, "done", reason="answer", answer="42", steps=0)
    done = queue.get(job.id)
    assert (done.prompt_tokens, done.cache_hit_tokens, done.completion_tokens) == (220, 160, 15)
    assert done.price == pytest.approx(0.75) and done.steps == 3 and done.answer == "42"
    assert done.terminal and done.finished is not None and done.options == {"max_steps": 3}
    assert queue.counts() == {"done": 1}


def test_events_are_numbered_and_read_after_a_sequence_number(queue: JobQueue) -> None:
    job = queue.submit("a")
    for i in range(5):
        assert queue.add_event(job.id, {"type": "step", "step": i}) == i + 1
    assert [s for s, _ in queue.events(job.id, after=3)] == [4, 5]
    assert queue.events(job.id, after=2, limit=1) == [(3, {"type": "step", "step": 2})]


def test_schedule_state_survives_reopening_and_a_stop_says_why(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "jobs.db")
    state = q.schedule_state("inbox")
    assert state.status == "active" and state.ticks == 0
    q.save_schedule(state.model_copy(update={"ticks": 4, "fingerprint": "abc"}))
    q.stop_schedule("inbox", "budget stop: schedule:inbox")
    q.close()
    again = JobQueue(tmp_path / "jobs.db").schedule_state("inbox")
    assert (again.status, again.reason, again.ticks, again.fingerprint) == (
        "stopped", "budget stop: schedule:inbox", 4, "abc")
    q2 = JobQueue(tmp_path / "jobs.db")
    assert q2.resume_schedule("inbox").status == "active"
    assert not q2.active("inbox")
    q2.submit("t", schedule="inbox")
    assert q2.active("inbox")


def test_prune_deletes_old_finished_jobs_and_their_events_only(queue: JobQueue) -> None:
    old = queue.submit("old")
    queue.claim()
    queue.add_event(old.id, {"type": "step", "step": 1})
    queue.finish(old.id, "done")
    waiting = queue.submit("waiting")
    assert queue.prune(older_than=3600) == 0  # finished just now: kept
    assert queue.prune(older_than=0) == 1
    assert [j.id for j in queue.list()] == [waiting.id]
    assert queue.events(old.id) == []


def test_only_a_job_that_stopped_can_be_retried(queue: JobQueue) -> None:
    job = queue.submit("a")
    with pytest.raises(JobError, match="is queued"):
        queue.retry(job.id)
    queue.claim()
    with pytest.raises(JobError, match="is running"):
        queue.retry(job.id)
    queue.finish(job.id, "budget", reason="budget", message="budget stop")
    again = queue.retry(job.id)
    assert (again.status, again.reason, again.message, again.finished) == ("queued", "", "",
                                                                           None)
    queue.claim()
    queue.finish(job.id, "done")
    with pytest.raises(JobError, match="is done"):
        queue.retry(job.id)
    with pytest.raises(JobError, match="no job"):
        queue.retry("nope")
