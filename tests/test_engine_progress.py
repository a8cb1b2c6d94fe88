from __future__ import annotations

import io
import time

import pytest

from whalebone.engine.runtime.progress import Progress, wanted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_the_work_is_quick() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(100, "prefill", stream=out, enabled=True, delay=0.5, clock=clock) as bar:
        clock.now += 0.2
        bar.update(100)
    assert out.getvalue() == ""


def test_draws_a_bar_once_the_work_takes_more_than_a_moment() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(32768, "prefill", unit="tok", stream=out, enabled=True, clock=clock) as bar:
        clock.now += 1.0
        bar.update(16384)
        assert "\rprefill [" in out.getvalue() and " 50%" in out.getvalue()
        assert "16384/32768 tok" in out.getvalue()
        clock.now += 1.0
        bar.update(16384)
    assert out.getvalue().endswith("100%  32768/32768 tok  2.0s\n")


def test_off_unless_a_terminal_or_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHALEBONE_PROGRESS", raising=False)
    assert not wanted(io.StringIO())
    assert wanted(FakeTTY())
    assert wanted(io.StringIO(), enabled=True)
    monkeypatch.setenv("WHALEBONE_PROGRESS", "1")
    assert wanted(io.StringIO())
    monkeypatch.setenv("WHALEBONE_PROGRESS", "0")
    assert not wanted(FakeTTY())


def test_a_disabled_bar_writes_nothing_even_when_slow() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(10, "load", stream=out, enabled=False, clock=clock) as bar:
        clock.now += 10
        bar.update(10)
    assert out.getvalue() == ""


def test_ticking_moves_the_clock_of_one_long_call() -> None:
    out = io.StringIO()
    with Progress(0, "loading ckpt", stream=out, enabled=True, delay=0.0) as bar, \
            bar.ticking(every=0.01):
        deadline = time.monotonic() + 5
        while out.getvalue().count("\r") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    text = out.getvalue()
    assert text.count("\rloading ckpt …  ") >= 3 and text.endswith("s\n")


def test_ticking_a_disabled_bar_starts_no_thread() -> None:
    import threading

    before = threading.active_count()
    with Progress(0, "x", stream=io.StringIO(), enabled=False) as bar, bar.ticking():
        assert threading.active_count() == before
