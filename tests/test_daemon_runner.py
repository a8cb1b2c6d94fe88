"""Running one job in-process: checkpoints when draining, cancellation, resuming a session
that had already answered, bad tool settings, and a budget stop that stops its schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_kit import appends, write_script

from whalebone.agent.daemon.config import DaemonConfig
from whalebone.agent.daemon.engines import Engines
from whalebone.agent.daemon.jobs import JobQueue
from whalebone.agent.daemon.runner import JobRunner, Running
from whalebone.agent.store import SessionStore


class Setup:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        ws = tmp_path / "ws"
        ws.mkdir(exist_ok=True)
        self.ws = ws
        engine = write_script(tmp_path / "s.json", appends(3, "Three."))
        self.config = DaemonConfig.model_validate({
            "home": str(tmp_path), "workspace": str(ws), "tools": "agent_kit:file_tools",
            "engine": engine, "agent": {"date_in_task": False}, **config})
        self.queue = JobQueue(self.config.jobs_path)
        self.store = SessionStore(self.config.store_path)
        self.logs: list[dict[str, Any]] = []
        self.runner = JobRunner(self.config, self.queue, self.store, Engines(), self.log)

    def log(self, event: str, **fields: Any) -> None:
        self.logs.append({"event": event, **fields})

    def lines(self) -> list[str]:
        log = self.ws / "log.txt"
        return log.read_text().splitlines() if log.exists() else []

    def run(self, during: Any = None) -> None:
        """Claim the next job and run it (with ``during`` beside it)."""
        async def go() -> None:
            job = self.queue.claim()
            assert job is not None
            running = Running(job)  # a cancel scope: made inside the event loop
            async with anyio.create_task_group() as tg:
                if during is not None:
                    tg.start_soon(during, running)
                await self.runner.run(running)
                tg.cancel_scope.cancel()

        anyio.run(go)


def test_a_job_runs_to_its_answer_with_events_and_usage(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    job = s.queue.submit("Append three lines.")
    s.run()
    done = s.queue.get(job.id)
    assert (done.status, done.answer, done.steps) == ("done", "Three.", 4)
    assert s.lines() == ["line-0", "line-1", "line-2"]
    events = [e for _, e in s.queue.events(job.id)]
    kinds = [e["type"] for e in events]
    assert kinds.count("step") == 4 and kinds.count("usage") == 4 and kinds[-1] == "done"
    # Deltas coalesced: one reasoning event per call, whole.
    assert [e["text"] for e in events if e["type"] == "reasoning"] == [
        "Step 0: append.", "Step 1: append.", "Step 2: append.", "Done."]
    assert done.prompt_tokens == sum(e["prompt_tokens"] for _, e in s.queue.events(job.id)
                                     if e["type"] == "usage")
    assert [e["step"] for e in s.logs if e["event"] == "model_call"] == [1, 2, 3, 4]


def test_draining_stops_at_the_next_checkpoint_and_the_job_resumes_later(tmp_path: Path
                                                                         ) -> None:
    s = Setup(tmp_path, engine_options={"delay": 0.002})
    job = s.queue.submit("Append three lines.")

    async def drain_after_first_line(running: Running) -> None:
        while not s.lines():
            await anyio.sleep(0.005)
        running.stopping = True

    s.run(drain_after_first_line)
    mid = s.queue.get(job.id)
    assert (mid.status, mid.reason) == ("queued", "interrupted")
    written = s.lines()
    assert written in (["line-0"], ["line-0", "line-1"]) and mid.session_id
    # Stopped at a checkpoint: every call made has its result committed (system, task, then
    # a call and its result per line).
    assert s.store.info(mid.session_id).messages == 2 + 2 * len(written)
    s.run()
    done = s.queue.get(job.id)
    assert done.status == "done" and done.attempts == 2
    assert s.lines() == ["line-0", "line-1", "line-2"]  # nothing repeated
    users = [m for m in s.store.messages(done.session_id) if m["role"] == "user"]
    assert len(users) == 1  # the task was not appended again on resume


def test_cancelling_a_running_job_keeps_what_it_committed(tmp_path: Path) -> None:
    s = Setup(tmp_path, engine_options={"delay": 0.002})
    job = s.queue.submit("Append three lines.")

    async def cancel_after_first_line(running: Running) -> None:
        while not s.lines():
            await anyio.sleep(0.005)
        running.scope.cancel()

    s.run(cancel_after_first_line)
    done = s.queue.get(job.id)
    assert done.status == "cancelled" and done.terminal
    assert s.store.messages(done.session_id)[-1]["role"] in ("tool", "assistant")


def test_a_session_that_answered_before_a_crash_finishes_without_a_model_call(
        tmp_path: Path) -> None:
    s = Setup(tmp_path)
    job = s.queue.submit("Append three lines.")
    s.run()
    answered = s.queue.get(job.id)
    calls = len(s.store.usage(answered.session_id))
    # As if the daemon died after the answer was committed but before the job was marked.
    s.queue.finish(job.id, "running")
    assert s.queue.requeue_running() == ([job.id], [])
    s.run()
    again = s.queue.get(job.id)
    assert again.status == "done" and again.answer == "Three."
    assert len(s.store.usage(answered.session_id)) == calls


def test_a_job_queued_directly_on_an_engine_not_in_the_config_fails_unrun(tmp_path: Path
                                                                         ) -> None:
    s = Setup(tmp_path)
    job = s.queue.submit("x", engine="openai:https://attacker.example/v1")
    s.run()
    done = s.queue.get(job.id)
    assert (done.status, done.reason) == ("failed", "engine_not_allowed")
    assert done.session_id == ""  # nothing was started


@pytest.mark.parametrize("tools, needle", [("nowhere.at_all:tools", "cannot be loaded"),
                                           ("agent_kit:no_such_function", "cannot be loaded")])
def test_tools_that_cannot_load_fail_the_job_clearly(tmp_path: Path, tools: str,
                                                     needle: str) -> None:
    s = Setup(tmp_path, tools=tools)
    job = s.queue.submit("x")
    s.run()
    done = s.queue.get(job.id)
    assert done.status == "failed" and done.reason == "bad_config" and needle in done.message


def test_a_budget_stop_ends_the_job_and_stops_its_schedule(tmp_path: Path) -> None:
    s = Setup(tmp_path, budget={"on_cap": "deny"}, schedule=[
        {"name": "digest", "every": 60, "task": "t", "budget_tokens": 100}])
    job = s.queue.submit("t", schedule="digest")
    s.run()
    done = s.queue.get(job.id)
    assert done.status == "budget" and "schedule:digest" in done.message
    state = s.queue.schedule_state("digest")
    assert state.status == "stopped" and state.reason == done.message
    assert s.store.usage(done.session_id) == []  # stopped before spending


def test_an_auditor_engine_from_the_config_decides_a_frozen_jobs_extension(tmp_path: Path
                                                                           ) -> None:
    from whalebone.budget.auditor import TOOL_NAME
    from whalebone.budget.ledger import Ledger
    from whalebone.budget.records import DecisionBook
    from whalebone.dsml import emit_completion

    verdict = emit_completion("", reasoning="Steady progress, no errors.", tool_calls=[
        (TOOL_NAME, {"progress_since_last_extension": "some", "repeated_failures": False,
                     "loop_signals": False, "share_of_budget_used": 1.0,
                     "base_rate_of_similar_runs": "unknown", "decision": "approve",
                     "amount": 2000,
                     "reason": "Each step appended a line without errors."})])
    auditor = write_script(tmp_path / "auditor.json", [verdict])
    s = Setup(tmp_path, agent={"date_in_task": False, "max_tokens": 64}, budget={
        "session_tokens": 700, "max_step_tokens": 5000, "auditor": auditor})
    job = s.queue.submit("Append three lines.")
    s.run()
    done = s.queue.get(job.id)
    assert done.status == "done" and s.lines() == ["line-0", "line-1", "line-2"]
    decisions = DecisionBook(Ledger(s.config.ledger_path)).decisions()
    assert [d.decision for d in decisions] == ["approve"]
    assert decisions[0].decider.startswith("auditor:replay") and decisions[0].amount == 2000


def test_a_budget_stopped_job_retried_after_a_raise_resumes_where_it_stopped(tmp_path: Path
                                                                            ) -> None:
    from whalebone.agent.cli import main

    s = Setup(tmp_path, agent={"date_in_task": False, "max_tokens": 64},
              budget={"session_tokens": 700, "on_cap": "deny"})
    job = s.queue.submit("Append three lines.")
    s.run()
    stopped = s.queue.get(job.id)
    assert stopped.status == "budget" and s.lines() == ["line-0"]
    # A person raises it (kept over the config's stricter session_tokens: named exactly).
    assert main(["budget", "--db", str(s.config.ledger_path), "set",
                 f"session:{stopped.session_id}", "--tokens", "100000"]) == 0
    assert s.queue.retry(job.id).status == "queued"
    s.run()
    done = s.queue.get(job.id)
    assert done.status == "done" and done.session_id == stopped.session_id
    assert s.lines() == ["line-0", "line-1", "line-2"]  # continued, nothing repeated


def test_a_scheduled_jobs_model_calls_are_metered_as_heartbeats(tmp_path: Path) -> None:
    from whalebone.budget.ledger import Ledger

    s = Setup(tmp_path, budget={"session_tokens": 1_000_000}, schedule=[
        {"name": "digest", "every": 60, "task": "t"}])
    by_hand = s.queue.submit("Append three lines.")
    s.run()
    (tmp_path / "ws" / "log.txt").unlink()
    scheduled = s.queue.submit("Append three lines.", schedule="digest")
    s.run()
    ledger = Ledger(s.config.ledger_path)
    for job, kind in ((by_hand, "turn"), (scheduled, "heartbeat")):
        done = s.queue.get(job.id)
        assert done.status == "done"
        usage = [e for _, e in s.queue.events(job.id) if e["type"] == "usage"]
        assert len(usage) == 4 and {u["kind"] for u in usage} == {kind}
        assert {u.kind for u in s.store.usage(done.session_id)} == {kind}
        assert set(ledger.spend_by_kind(f"session:{done.session_id}")) == {kind}
