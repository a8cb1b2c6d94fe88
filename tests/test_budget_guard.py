"""The guard over a real SQLite ledger, with ScriptedEngines as worker and auditor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.budget.auditor import Auditor
from whalebone.budget.guard import BudgetGuard, BudgetStop, CallPlan, RunFacts, TicketError
from whalebone.budget.ledger import Ledger, Limit, day_scope
from whalebone.budget.policy import BudgetPolicy, CommandRun, Verdict
from whalebone.budget.records import DecisionBook
from whalebone.dsml import emit_completion
from whalebone.engine.base import GenerationRequest, Usage
from whalebone.engine.prices import PriceTable, UnknownPrice
from whalebone.engine.scripted import ScriptedEngine

FLASH = "deepseek-v4-flash"


def plan(kind: str = "turn", *, run: str = "run1", session: str = "s1", prompt: int = 20_000,
         cached: int = 15_000, max_tokens: int = 1000, model: str = FLASH) -> CallPlan:
    return CallPlan(run, session, "coder", kind, model, prompt, cached, max_tokens)


STEADY = {"progress_since_last_extension": "some", "repeated_failures": False,
          "loop_signals": False, "share_of_budget_used": 1.0,
          "base_rate_of_similar_runs": "unknown"}


def approve(amount: float) -> str:
    return emit_completion(reasoning="Files change and tests start to pass.",
                           tool_calls=[("decide_budget", {**STEADY, "decision": "approve",
                                                          "amount": amount,
                                                          "reason": "progress"})])


def usage(prompt: int = 20_000, hit: int = 15_000, out: int = 400) -> Usage:
    return Usage(prompt_tokens=prompt, prompt_cache_hit_tokens=hit,
                 prompt_cache_miss_tokens=prompt - hit, completion_tokens=out)


def facts() -> RunFacts:
    return RunFacts(task="fix the failing test", steps=7, files_changed=["app.py"],
                    commands=[CommandRun(command="pytest -q", exit_status=1)], tool_calls=9)


def spend_until_stopped(guard: BudgetGuard, **plan_args: Any) -> BudgetStop:
    """Make calls (each costing less than its worst case) until the guard stops the run."""

    async def run() -> None:
        while True:
            ticket = await guard.before_call(plan(**plan_args), facts=facts)
            guard.settle(ticket, usage())

    with pytest.raises(BudgetStop) as stop:
        anyio.run(run)
    return stop.value


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "budget.db")


def test_the_worst_case_prices_misses_hits_and_output_separately(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=1.0))
    p = PriceTable().lookup(FLASH)
    ticket = anyio.run(guard.before_call, plan())
    # 15,000 tokens are expected to hit the cache, but a bound cannot count on it.
    expected = (20_000 * p.cache_miss + 1_001 * p.output) / 1e6
    assert ticket.worst_usd == pytest.approx(expected) and ticket.worst_tokens == 21_001
    scopes = ["run:run1", "session:s1", day_scope("agent:coder"), day_scope("global")]
    assert list(ticket.scopes) == scopes
    for scope in scopes:  # reserved everywhere, capped only where the policy says
        assert ledger.state(scope).reserved_usd == pytest.approx(expected)
    assert ledger.limit("session:s1") == Limit(scope="session:s1", max_usd=1.0)
    assert ledger.limit("run:run1") is None


def test_expected_cache_hits_are_reserved_at_the_miss_price(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger)
    p = PriceTable().lookup(FLASH)
    ticket = anyio.run(guard.before_call, plan())
    assert ticket.worst_usd == pytest.approx((20_000 * p.cache_miss + 1_001 * p.output) / 1e6)
    evicted = usage(hit=0)  # the cache was gone: every prompt token missed
    assert guard.settle(ticket, evicted).usd <= ticket.worst_usd


def test_a_model_without_a_price_is_refused_before_any_call(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger)
    with pytest.raises(UnknownPrice, match="no price known for model 'gpt-unknown'"):
        anyio.run(guard.before_call, plan(model="gpt-unknown"))
    assert ledger.scopes() == []  # nothing reserved, nothing limited


def test_settling_charges_the_actual_usage_by_kind_with_cache_savings(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger)
    ticket = anyio.run(guard.before_call, plan("compaction"))
    actual = guard.settle(ticket, usage())
    p = PriceTable().lookup(FLASH)
    assert actual.usd == pytest.approx((5_000 * p.cache_miss + 15_000 * p.cache_hit
                                        + 400 * p.output) / 1e6)
    state = ledger.state("session:s1")
    assert state.reserved_usd == 0 and state.spent_usd == pytest.approx(actual.usd)
    assert state.saved_usd == pytest.approx(15_000 * (p.cache_miss - p.cache_hit) / 1e6)
    assert ledger.spend_by_kind("run:run1") == {"compaction": pytest.approx(actual.usd)}
    with pytest.raises(TicketError):
        guard.settle(ticket, usage())
    second = anyio.run(guard.before_call, plan("heartbeat"))
    guard.release(second)
    with pytest.raises(TicketError):
        guard.release(second)
    assert ledger.state(day_scope("global")).reserved_usd == 0


def test_a_model_switch_is_priced_for_the_model_that_served(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger)
    ticket = anyio.run(guard.before_call, plan())
    assert guard.settle(ticket, usage(), model="whalebone-local").usd == 0.0


def test_a_deny_policy_stops_at_the_cap_naming_scope_limit_and_spend(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.01, on_cap="deny"))
    calls = []

    def counted() -> RunFacts:
        calls.append(1)
        return facts()

    async def run() -> int:
        made = 0
        while True:
            ticket = await guard.before_call(plan(), facts=counted)
            guard.settle(ticket, usage())
            made += 1

    with pytest.raises(BudgetStop) as stop:
        anyio.run(run)
    assert calls == [1]  # facts are gathered at the cap, not on every call
    err = stop.value
    assert err.scope == "session:s1" and err.unit == "usd" and err.limit == 0.01
    assert "session:s1 limit $0.010000" in str(err) and "policy_deny" in str(err)
    assert err.spent == pytest.approx(ledger.state("session:s1").spent_usd)
    assert ledger.state("session:s1").spent_usd <= 0.01
    assert ledger.state("session:s1").reserved_usd == 0
    book = DecisionBook(ledger)
    [decision] = book.decisions()
    assert (decision.decision, decision.decider, decision.cause) == ("deny", "policy",
                                                                     "policy_deny")
    stored = book.inputs(decision.request_id)
    assert stored["facts"]["task"] == "fix the failing test"
    assert stored["facts"]["spend_by_kind"]["turn"] == pytest.approx(err.spent)  # from ledger


def test_token_limits_stop_too(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(run_tokens=50_000, on_cap="deny"))

    stop = spend_until_stopped(guard)
    assert stop.unit == "tokens" and stop.scope == "run:run1"
    assert ledger.state("run:run1").spent_tokens <= 50_000


def test_an_auditor_approval_extends_the_scope_and_is_metered(ledger: Ledger) -> None:
    auditor_engine = ScriptedEngine([approve(0.01)], name="aud", model="deepseek-v4-pro")
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, max_step_usd=0.02),
                        auditor=Auditor(auditor_engine))

    async def run() -> int:
        made = 0
        for _ in range(3):
            guard.settle(await guard.before_call(plan(), facts=facts), usage())
            made += 1
        return made

    assert anyio.run(run) == 3
    assert ledger.limit("session:s1").max_usd == pytest.approx(0.014)  # type: ignore[union-attr]
    [decision] = DecisionBook(ledger).decisions()
    assert (decision.decision, decision.amount, decision.applied) == ("approve", 0.01, True)
    assert decision.decider == "auditor:aud/deepseek-v4-pro" and decision.cost_usd > 0
    global_kinds = ledger.spend_by_kind(day_scope("global"))
    assert global_kinds["auditor"] == pytest.approx(decision.cost_usd)  # metered globally
    assert "auditor" not in ledger.spend_by_kind("session:s1")  # not billed to the worker
    assert ledger.state(day_scope("auditor")).spent_usd == pytest.approx(decision.cost_usd)
    prompt = auditor_engine.requests[0].prompt or ""
    assert '"fix the failing test"' in prompt and "session:s1" in prompt


def test_the_frozen_worker_makes_no_call_while_the_auditor_decides(ledger: Ledger) -> None:
    worker_calls: list[float] = []

    def worker_script(_: GenerationRequest) -> str:
        worker_calls.append(time.monotonic())
        return emit_completion("done", reasoning="ok")

    audit_started: list[float] = []

    def auditor_script(_: GenerationRequest) -> str:
        audit_started.append(time.monotonic())
        return approve(0.01)

    worker = ScriptedEngine(worker_script, model=FLASH)
    auditor = ScriptedEngine(auditor_script, model="deepseek-v4-pro", delay=0.01)
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, max_step_usd=0.02),
                        auditor=Auditor(auditor))

    async def run() -> None:
        for _ in range(4):
            ticket = await guard.before_call(plan(prompt=200, cached=0, max_tokens=6000),
                                             facts=facts)
            done = await worker.generate(GenerationRequest(prompt="<｜begin▁of▁sentence｜>hi",
                                                           max_tokens=6000))
            guard.settle(ticket, done.usage, model=done.model)

    anyio.run(run)
    [decision] = DecisionBook(ledger).decisions()
    decided = decision.created
    assert len(audit_started) == 1 and len(worker_calls) == 4
    wall = time.time() - time.monotonic()  # decisions are stamped in wall-clock time
    frozen_from, frozen_to = audit_started[0], decided - wall
    assert frozen_to - frozen_from > 0.3  # the auditor streamed slowly: a real window
    assert not [t for t in worker_calls if frozen_from <= t <= frozen_to]
    assert worker_calls[-1] > frozen_to  # and the worker went on after the approval


@pytest.mark.parametrize("script", [
    ["nonsense" + "<｜end▁of▁sentence｜>"],  # garbage
    [approve(0.5)],  # over the maximum step of 0.02
    [],  # engine error (exhausted)
])
def test_every_failure_of_the_auditor_path_ends_in_deny(ledger: Ledger, script: Any) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, max_step_usd=0.02,
                                                    auditor_timeout_s=0.3),
                        auditor=Auditor(ScriptedEngine(script, model="deepseek-v4-pro")))

    assert spend_until_stopped(guard).verdict.decision == "deny"
    assert ledger.limit("session:s1").max_usd == 0.004  # type: ignore[union-attr]
    assert ledger.state("session:s1").spent_usd <= 0.004


def test_a_timeout_an_unpriced_auditor_and_no_auditor_also_deny(ledger: Ledger) -> None:
    slow = ScriptedEngine([approve(0.01)], model="deepseek-v4-pro", delay=0.05)
    unpriced = ScriptedEngine([approve(0.01)], model="mystery-model")
    causes = []
    for i, (auditor, cause) in enumerate([(Auditor(slow), "timeout"),
                                          (Auditor(unpriced), "auditor_error"),
                                          (None, "no_auditor")]):
        guard = BudgetGuard(ledger, policy=BudgetPolicy(run_usd=0.004, max_step_usd=0.02,
                                                        auditor_timeout_s=0.3),
                            auditor=auditor)

        stop = spend_until_stopped(guard, run=f"r{i}")
        causes.append(stop.verdict.cause)
        assert cause in str(stop)
    assert causes == ["timeout", "auditor_error", "no_auditor"]
    timed_out = DecisionBook(ledger).decisions()[0]
    assert timed_out.cost_usd > 0  # an unanswered call is charged at its bound


def test_no_extension_past_the_step_or_the_per_run_maximum(ledger: Ledger) -> None:
    engine = ScriptedEngine(lambda _: approve(0.01), model="deepseek-v4-pro")
    guard = BudgetGuard(ledger, policy=BudgetPolicy(run_usd=0.004, max_step_usd=0.01,
                                                    max_extensions_per_run=2),
                        auditor=Auditor(engine))

    stop = spend_until_stopped(guard)
    assert stop.verdict.cause == "max_extensions" and len(engine.requests) == 2
    big = plan(run="other", prompt=900_000, cached=0)  # needs more than one step can give
    with pytest.raises(BudgetStop) as stop:
        anyio.run(guard.before_call, big)
    assert stop.value.verdict.cause == "shortfall_over_max"
    assert len(engine.requests) == 2  # the auditor was not asked


def test_the_auditor_cannot_spend_past_the_global_cap(ledger: Ledger) -> None:
    engine = ScriptedEngine([approve(0.01)], model="deepseek-v4-pro")
    guard = BudgetGuard(ledger, policy=BudgetPolicy(global_day_usd=0.004, max_step_usd=0.02),
                        auditor=Auditor(engine))

    stop = spend_until_stopped(guard)
    assert stop.verdict.cause == "no_budget_for_auditor" and engine.requests == []
    assert ledger.state(day_scope("global")).spent_usd <= 0.004


def test_a_person_decides_while_the_run_waits(ledger: Ledger, tmp_path: Path) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, on_cap="human",
                                                    poll_s=0.02, max_step_usd=0.05))
    other = DecisionBook(Ledger(ledger.path))  # another connection, as the CLI has

    async def person() -> None:
        while not other.pending("s1"):
            await anyio.sleep(0.02)
        [req] = other.pending("s1")
        assert req.request.facts.task == "fix the failing test"
        other.resolve(req.id, Verdict(decision="approve", amount=0.01, decider="human",
                                      reason="I checked the diff"))

    async def run() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(person)
            for _ in range(3):
                guard.settle(await guard.before_call(plan(), facts=facts), usage())
        return 3

    assert anyio.run(run) == 3
    [d] = other.decisions()
    assert (d.decider, d.decision, d.reason) == ("human", "approve", "I checked the diff")


def test_nobody_deciding_in_time_is_a_deny(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, on_cap="human",
                                                    human_wait_s=0.2, poll_s=0.02))

    assert "timeout" in str(spend_until_stopped(guard))


def test_base_rates_come_from_recorded_outcomes_of_extended_runs(ledger: Ledger) -> None:
    engine = ScriptedEngine(lambda _: approve(0.01), model="deepseek-v4-pro")
    guard = BudgetGuard(ledger, policy=BudgetPolicy(run_usd=0.004, max_step_usd=0.02,
                                                    max_extensions_per_run=1),
                        auditor=Auditor(engine))

    async def run(run_id: str) -> None:
        try:
            while True:
                guard.settle(await guard.before_call(plan(run=run_id)), usage())
        except BudgetStop:
            pass

    for i, outcome in enumerate(["finished", "budget", "budget"]):
        anyio.run(run, f"r{i}")
        guard.record_outcome(f"r{i}", session_id="s1", agent="coder", outcome=outcome)
    guard.record_outcome("plain", session_id="s1", agent="coder", outcome="finished")
    rates = guard.book.base_rates("coder")
    assert (rates.runs, rates.finished, rates.extended_runs, rates.extended_finished) == (
        4, 2, 3, 1)
    last_prompt = engine.requests[-1].prompt or ""
    assert "3 were extended, of which 1 finished (33%)" not in last_prompt  # asked before
    assert "2 were extended, of which 1 finished (50%)" in last_prompt


def test_limits_in_the_ledger_and_the_policy_combine_by_the_strictest(ledger: Ledger) -> None:
    ledger.set_default(Limit(scope="session", max_usd=0.002))
    ledger.set_default(Limit(scope="agent:coder", max_tokens=123_456))
    ledger.set_limit(Limit(scope=day_scope("global"), max_usd=3.0))  # set before the run
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=5.0, agent_day_tokens=200,
                                                    global_day_usd=1.0))
    guard.release(anyio.run(guard.before_call, plan(prompt=100, cached=0, max_tokens=10)))
    assert ledger.limit("session:s1") == Limit(scope="session:s1", max_usd=0.002)  # the ledger's
    assert ledger.limit(day_scope("agent:coder")).max_tokens == 200  # type: ignore[union-attr]
    assert ledger.limit(day_scope("global")).max_usd == 1.0  # type: ignore[union-attr]
    assert "session $0.0000/$0.0020" in guard.state_line(plan())


def test_an_extended_scope_keeps_its_raised_limit_over_the_policy(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, max_step_usd=0.01),
                        auditor=Auditor(ScriptedEngine([approve(0.01)], model=FLASH)))

    async def three_calls() -> None:
        for _ in range(3):
            guard.settle(await guard.before_call(plan(), facts=facts), usage())

    anyio.run(three_calls)
    assert ledger.limit("session:s1").max_usd == pytest.approx(0.014)  # type: ignore[union-attr]


HAMMER = textwrap.dedent("""
    import random, sys, anyio
    from whalebone.budget.auditor import Auditor
    from whalebone.budget.guard import BudgetGuard, BudgetStop, CallPlan, RunFacts
    from whalebone.budget.policy import BudgetPolicy
    from whalebone.dsml import emit_completion
    from whalebone.engine.base import Usage
    from whalebone.engine.scripted import ScriptedEngine

    path, me = sys.argv[1], sys.argv[2]
    rng = random.Random(int(me))
    def answer(_):
        ok = rng.random() < 0.7
        return emit_completion(reasoning="r", tool_calls=[("decide_budget", {
            "progress_since_last_extension": "some", "repeated_failures": False,
            "loop_signals": False, "share_of_budget_used": 1.0,
            "base_rate_of_similar_runs": "unknown",
            "decision": "approve" if ok else "deny", "amount": 0.004, "reason": "r"})])
    guard = BudgetGuard(path, policy=BudgetPolicy(session_usd=0.02, global_day_usd=0.03,
                        max_step_usd=0.005, max_extensions_per_run=3),
                        auditor=Auditor(ScriptedEngine(answer, model="deepseek-v4-pro")))
    async def main():
        calls = 0
        try:
            while True:
                prompt = rng.randint(1000, 8000)
                p = CallPlan("run" + me, "s" + me, "coder", rng.choice(["turn", "retry"]),
                             "deepseek-v4-flash", prompt, prompt // 2, 1500)
                t = await guard.before_call(p, facts=lambda: RunFacts(steps=calls))
                out = rng.randint(0, 1500)
                guard.settle(t, Usage(prompt_tokens=prompt, prompt_cache_hit_tokens=prompt // 2,
                                      prompt_cache_miss_tokens=prompt - prompt // 2,
                                      completion_tokens=out))
                calls += 1
        except BudgetStop as e:
            print(calls, e.scope)
    anyio.run(main)
""")


def test_concurrent_sessions_never_overshoot_through_the_guard(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ledger = Ledger(path)
    # Two sessions meet their own caps early (and ask the auditor); together the four need
    # more than the global cap, which must hold whatever the auditor says.
    for i, cap in enumerate([0.004, 0.006, 0.02, 0.02]):
        ledger.set_limit(Limit(scope=f"session:s{i}", max_usd=cap))
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, str(path), str(i)],
                              stdout=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for scope in ledger.scopes():
        state = ledger.state(scope)
        assert state.reserved_usd == 0, scope
        if state.max_usd is not None:
            assert state.spent_usd <= state.max_usd + 1e-9, scope
    glob = ledger.state(day_scope("global"))
    assert glob.spent_usd > 0.025 and glob.max_usd == 0.03  # used up, never extended
    book = DecisionBook(ledger)
    decisions = book.decisions()
    assert decisions and {d.decision for d in decisions} <= {"approve", "deny"}
    approved = sum(d.amount for d in decisions if d.decision == "approve" and d.applied
                   and d.scope.startswith("session:"))
    sessions = [ledger.limit(f"session:s{i}") for i in range(4)]
    assert sum(s.max_usd for s in sessions if s) == pytest.approx(0.05 + approved)
    assert json.loads(json.dumps([d.model_dump() for d in decisions]))  # all serialisable


def test_a_person_can_overrule_a_slow_auditor(ledger: Ledger) -> None:
    slow = ScriptedEngine([approve(0.01)], model="deepseek-v4-pro", delay=0.05)
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, poll_s=0.02),
                        auditor=Auditor(slow))
    other = DecisionBook(Ledger(ledger.path))

    async def person() -> None:
        while not other.pending("s1"):
            await anyio.sleep(0.02)
        other.resolve(other.pending("s1")[0].id, Verdict(decision="deny", decider="human",
                                                         reason="not worth it"))

    stops: list[BudgetStop] = []

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(person)
            try:
                while True:
                    guard.settle(await guard.before_call(plan()), usage())
            except BudgetStop as e:
                stops.append(e)

    t0 = time.monotonic()
    anyio.run(run)
    assert "not worth it" in str(stops[0]) and stops[0].verdict.decider == "human"
    assert time.monotonic() - t0 < 3  # the auditor's slow answer was not waited for
    assert [d.decider for d in other.decisions()] == ["human"]
    assert ledger.spend_by_kind(day_scope("global"))["auditor"] > 0  # its call is still charged
    assert ledger.state(day_scope("auditor")).reserved_usd == 0


def test_a_cancelled_frozen_run_leaves_no_request_pending(ledger: Ledger) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.004, on_cap="human",
                                                    poll_s=0.02))

    async def run() -> None:
        with anyio.move_on_after(0.3):
            while True:
                guard.settle(await guard.before_call(plan()), usage())

    anyio.run(run)
    assert guard.book.pending() == []
    [d] = guard.book.decisions()
    assert (d.decision, d.cause) == ("deny", "cancelled")


def test_a_call_blocked_only_by_calls_in_flight_waits_for_them(
        ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    guard = BudgetGuard(ledger, policy=BudgetPolicy(session_usd=0.012, on_cap="deny",
                                                    poll_s=0.02))
    first = anyio.run(guard.before_call, plan())  # holds ~$0.0051 of the $0.012
    second = anyio.run(guard.before_call, plan())  # ~$0.0101 held: a third does not fit
    order: list[str] = []

    async def third() -> None:
        guard.settle(await guard.before_call(plan()), usage(out=10))
        order.append("third")

    async def settle_others() -> None:
        await anyio.sleep(0.2)
        order.append("settled")
        guard.settle(first, usage(out=10))  # both cost less than their worst case
        guard.settle(second, usage(out=10))

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            tg.start_soon(settle_others)

    with caplog.at_level("WARNING", logger="whalebone.budget.guard"):
        anyio.run(both)
    assert order == ["settled", "third"]  # it waited instead of asking, then went ahead
    assert guard.book.decisions() == [] and ledger.state("session:s1").spent_usd <= 0.012
    # It said what it waited for, once: the scope, the amount held, the holder.
    [said] = [r.getMessage() for r in caplog.records if "waits" in r.getMessage()]
    assert "session:s1" in said and "$0.010" in said and f"pid {os.getpid()}" in said
