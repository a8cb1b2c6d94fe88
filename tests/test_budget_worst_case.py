"""A cap is never passed: reservations are true worst cases (an engine may report no cache hits
at all), and a killed holder's reservation is released at once, not after its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
from fault_kit import MISSER

from whalebone.budget.guard import BudgetGuard, CallPlan
from whalebone.budget.ledger import Ledger, Limit, ReservationRefused, day_scope
from whalebone.budget.policy import BudgetPolicy
from whalebone.engine.base import Usage

CAP = 0.02

def test_concurrent_agents_whose_calls_miss_the_cache_never_pass_the_cap(
        tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ledger = Ledger(path)
    ledger.set_default(Limit(scope="global", max_usd=CAP))
    procs = [subprocess.Popen([sys.executable, "-c", MISSER, str(path), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    calls = sum(int(out.strip()) for out, _ in outs)
    state = ledger.state(day_scope("global"))
    assert calls > 10 and state.reserved_usd == 0
    assert state.spent_usd <= CAP + 1e-12, f"{state.spent_usd} spent on a {CAP} cap"


def test_one_call_settled_with_no_cache_hits_fits_its_reservation(tmp_path: Path) -> None:
    guard = BudgetGuard(tmp_path / "b.db", policy=BudgetPolicy(session_usd=0.0012,
                                                               on_cap="deny"))
    plan = CallPlan("r", "s", "coder", "turn", "deepseek-v4-flash", 5000, 5000, 100)
    ticket = anyio.run(guard.before_call, plan)
    actual = guard.settle(ticket, Usage(prompt_tokens=5000, prompt_cache_hit_tokens=0,
                                        prompt_cache_miss_tokens=5000, completion_tokens=101))
    assert actual.usd <= ticket.worst_usd
    assert guard.ledger.state("session:s").spent_usd <= 0.0012


HOLDER = textwrap.dedent("""
    import sys, time
    from whalebone.budget.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    ledger.reserve(["shared"], usd=0.9, tokens=0)
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_killed_holders_reservation_is_released_at_once(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    ledger = Ledger(path)  # the default 600 s lease
    ledger.set_limit(Limit(scope="shared", max_usd=1.0))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    with pytest.raises(ReservationRefused):
        ledger.reserve(["shared"], usd=0.5, tokens=0)  # alive: its reservation counts
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # a zombie (not yet reaped) is dead too
        try:
            ledger.release(ledger.reserve(["shared"], usd=0.5, tokens=0))
            break
        except ReservationRefused:
            assert time.monotonic() < deadline, "the dead holder still blocks the scope"
            time.sleep(0.01)
    proc.wait()
    assert ledger.state("shared").reserved_usd == 0


def test_a_holder_is_named_by_pid_and_start_time() -> None:
    from whalebone.budget.ledger import holder_dead, holder_id

    me = holder_id(os.getpid())
    assert not holder_dead(me)
    host, pid, start = me.rsplit(":", 2)
    if start:  # Linux: a reused pid has another start time
        assert holder_dead(f"{host}:{pid}:{int(start) + 1}")
    assert not holder_dead(f"another-host:{pid}:{start}")  # cannot check: counts as alive
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    assert holder_dead(f"{host}:{done.stdout.strip()}:{start}")
