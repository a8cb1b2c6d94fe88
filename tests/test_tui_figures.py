"""The status bar's figures: built from stored usage and usage events, never guessed."""

from __future__ import annotations

from whalebone.agent.events import UsageReport
from whalebone.agent.store import UsageRecord
from whalebone.budget.ledger import ScopeState
from whalebone.tui.figures import StatusFigures, compact, gauge, percent


def usage(prompt: int, hits: int, completion: int, price: float = 0.0,
          engine_seconds: float = 0.0) -> UsageReport:
    return UsageReport(prompt_tokens=prompt, cache_hit_tokens=hits,
                       cache_miss_tokens=prompt - hits, completion_tokens=completion,
                       price=price, run_prompt_tokens=prompt,
                       run_cache_hit_tokens=hits, engine_seconds=engine_seconds)


def test_numbers_and_gauges_are_compact() -> None:
    assert [compact(n) for n in (999, 1234, 1_048_576, 2_500_000_000)] == [
        "999", "1.2k", "1.0M", "2.5G"]
    assert gauge(0.0) == "░" * 10 and gauge(1.0) == "█" * 10 and gauge(0.34) == "███" + "░" * 7
    assert gauge(7.0, 4) == "████"  # clamped
    assert percent(None) == "—" and percent(0.956) == "96%"


def test_a_resumed_session_starts_from_its_stored_usage() -> None:
    f = StatusFigures(engine="bundled", model="m", window=1000)
    f.reset_session([UsageRecord(prompt_tokens=100, cache_hit_tokens=0, completion_tokens=20,
                                 price=0.5),
                     UsageRecord(prompt_tokens=200, cache_hit_tokens=150,
                                 completion_tokens=30, price=0.25)])
    assert f.session_prompt == 300 and f.session_hits == 150 and f.session_spend == 0.75
    assert f.context_used == 230 and f.last_hit_rate == 0.75
    assert f.session_hit_rate == 0.5


def test_each_call_moves_the_session_figures_and_the_speed() -> None:
    f = StatusFigures(engine="bundled", model="m", window=1000)
    f.step_started(10.0)
    f.usage(usage(400, 0, 100, price=0.01), now=12.0)
    assert f.tokens_per_s == 50.0  # no engine time reported: wall time of the step
    f.step_started(20.0)
    f.usage(usage(600, 500, 60, engine_seconds=3.0), now=30.0)
    assert f.tokens_per_s == 20.0  # the engine's own time wins
    assert f.last_hit_rate == 500 / 600 and f.session_hit_rate == 500 / 1000
    assert f.context_used == 660 and round(f.session_spend, 6) == 0.01


def test_the_two_lines_say_what_the_figures_hold() -> None:
    f = StatusFigures(engine="bundled", model="whalebone-local", window=1_048_576,
                      memory="project:x")
    f.usage(usage(524_288, 262_144, 0, price=0.002), now=1.0)
    f.set_scopes([ScopeState(scope="session:abc", max_usd=1.0, max_tokens=None,
                             spent_usd=0.25, spent_tokens=0, reserved_usd=0.05,
                             reserved_tokens=0, saved_usd=0.0),
                  ScopeState(scope="agent:chat:2026-11-23", max_usd=None, max_tokens=5000,
                             spent_usd=0.0, spent_tokens=1200, reserved_usd=0.0,
                             reserved_tokens=300, saved_usd=0.0)])
    first, second = f.lines()
    assert "bundled·whalebone-local" in first and "mem:project:x" in first
    assert "█████░░░░░ 524.3k/1.0M 50%" in first
    assert "cache 50% (session 50%)" in second
    assert "spent $0.0020" in second
    assert "session $0.3000/$1.00" in second  # in-flight reservations count as spent
    assert "agent:chat today 1.5k/5.0k tok" in second
