from __future__ import annotations

import pytest

from whalebone.agent.loop_detector import LoopDetector


def test_the_same_call_three_times_is_a_loop() -> None:
    d = LoopDetector()
    assert d.observe("read_file", {"path": "a"}, "x") is None
    assert d.observe("read_file", {"path": "a"}, "y") is None
    verdict = d.observe("read_file", {"path": "a"}, "z")
    assert verdict is not None and verdict.kind == "repeat"
    assert 'read_file({"path": "a"}) was made 3 times' in verdict.message


def test_argument_order_does_not_hide_a_repeat() -> None:
    d = LoopDetector(repeat_limit=2)
    d.observe("f", {"a": 1, "b": 2}, "r")
    assert d.observe("f", {"b": 2, "a": 1}, "r") is not None


def test_a_cycle_without_new_information_is_a_loop_and_progress_is_not() -> None:
    d = LoopDetector()
    for _ in range(2):
        assert d.observe("ls", {}, "a b") is None
        assert d.observe("cat", {"p": "a"}, "1") is None
    d.observe("ls", {}, "a b")
    verdict = d.observe("cat", {"p": "a"}, "1")
    assert verdict is not None and verdict.kind == "cycle" and verdict.times == 3

    progress = LoopDetector()
    for i in range(10):  # the same pair of calls, but the results change: not a loop
        assert progress.observe("status", {}, f"step {i}") is None
        assert progress.observe("wait", {"s": 1}, "ok") is None


def test_distinct_calls_never_trip_it() -> None:
    d = LoopDetector()
    assert all(d.observe("read_file", {"path": f"f{i}"}, "x") is None for i in range(50))


def test_limit_must_make_sense() -> None:
    with pytest.raises(ValueError):
        LoopDetector(repeat_limit=1)
