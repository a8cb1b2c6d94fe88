from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from whalebone.budget.ledger import Actual, Ledger, Limit, ReservationRefused, day_scope


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "budget.db")


def test_reserve_settle_and_refuse(ledger: Ledger) -> None:
    ledger.set_limit(Limit(scope="session:a", max_usd=1.0))
    ledger.set_limit(Limit(scope="global", max_tokens=1000))
    r = ledger.reserve(["session:a", "global"], usd=0.6, tokens=600)
    with pytest.raises(ReservationRefused, match="'session:a' would be exceeded") as info:
        ledger.reserve(["session:a", "global"], usd=0.5, tokens=100)  # 0.6 in flight
    assert info.value.scope == "session:a" and info.value.unit == "usd"
    ledger.settle(r, Actual(usd=0.2, cache_hit_tokens=300, cache_miss_tokens=50,
                            completion_tokens=50, saved_usd=0.01))
    state = ledger.state("session:a")
    assert (state.spent_usd, state.reserved_usd, state.spent_tokens) == (0.2, 0.0, 400)
    r2 = ledger.reserve(["session:a", "global"], usd=0.5, tokens=100)  # fits now
    ledger.release(r2)
    with pytest.raises(ReservationRefused, match="tokens"):
        ledger.reserve(["session:a", "global"], usd=0.0, tokens=601)
    ledger.extend("global", tokens=1000)
    ledger.release(ledger.reserve(["global"], usd=0.0, tokens=601))


def test_unlimited_scopes_are_metered(ledger: Ledger) -> None:
    ledger.record([day_scope("agent:coder")], Actual(usd=0.5, kind="heartbeat"))
    assert ledger.state(day_scope("agent:coder")).spent_usd == 0.5
    assert day_scope("agent:coder") in ledger.scopes()


def test_a_dead_process_reservation_expires(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "b.db", lease_seconds=0.2)
    ledger.set_limit(Limit(scope="s", max_usd=1.0))
    ledger.reserve(["s"], usd=1.0, tokens=0)  # never settled
    with pytest.raises(ReservationRefused):
        ledger.reserve(["s"], usd=0.1, tokens=0)
    time.sleep(0.3)
    ledger.release(ledger.reserve(["s"], usd=0.1, tokens=0))


HAMMER = textwrap.dedent("""
    import random, sys
    from whalebone.budget.ledger import Actual, ReservationRefused, Ledger
    ledger = Ledger(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    refused = 0
    while refused < 20:
        worst = rng.uniform(0.001, 0.05)
        try:
            r = ledger.reserve(["shared", f"proc:{sys.argv[2]}"], usd=worst, tokens=1)
        except ReservationRefused:
            refused += 1
            continue
        ledger.settle(r, Actual(usd=worst * rng.choice([1.0, 1.0, 0.5]), completion_tokens=1))
""")


def test_concurrent_processes_never_overshoot_a_shared_budget(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "shared.db")
    ledger.set_limit(Limit(scope="shared", max_usd=1.0))
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, str(ledger.path), str(i)])
             for i in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    state = ledger.state("shared")
    assert state.spent_usd <= 1.0 + 1e-9 and state.reserved_usd == 0
    assert state.spent_usd > 0.9  # and the budget was actually used


def test_the_old_name_of_a_refused_reservation_still_works_with_a_warning() -> None:
    import whalebone.budget as budget
    from whalebone.budget import ReservationRefused

    with pytest.warns(DeprecationWarning, match="use ReservationRefused"):
        assert budget.BudgetExceeded is ReservationRefused
