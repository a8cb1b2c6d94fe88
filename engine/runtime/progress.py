"""A one-line progress bar on stderr for long prefills and checkpoint loads.

It stays silent unless the work takes more than a moment (``delay`` seconds) and the stream is a
terminal, or the caller (or ``WHALEBONE_PROGRESS=1``) asks for it; ``WHALEBONE_PROGRESS=0`` turns
it off everywhere. A service logging to a file never sees carriage-return noise.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


def wanted(stream: TextIO | None = None, enabled: bool | None = None) -> bool:
    """Whether a bar should show: an explicit choice, else the environment, else a TTY."""
    if enabled is not None:
        return enabled
    env = os.environ.get("WHALEBONE_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """``with Progress(total, "prefill", unit="tok") as bar: bar.update(n)``."""

    WIDTH = 28

    def __init__(self, total: int, label: str, *, unit: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, delay: float = 0.5,
                 clock: Callable[[], float] | None = None) -> None:
        self.total = max(0, total)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = wanted(self.stream, enabled)
        self.delay = delay
        self.done = 0
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._shown = False
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        if not self.enabled:
            return
        now = self._clock()
        if now - self._start < self.delay:
            return
        if self._shown and now - self._last_draw < 0.1 and self.done < self.total:
            return  # redraw at most ten times a second
        self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar as text, e.g. ``prefill [#######.....]  58%  19000/32768 tok  3.1s``."""
        elapsed = (now if now is not None else self._clock()) - self._start
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            frac = self.done / self.total
            fill = int(frac * self.WIDTH)
            bar = "#" * fill + "." * (self.WIDTH - fill)
            return (f"{self.label} [{bar}] {frac:4.0%}  {self.done}/{self.total}{unit}  "
                    f"{elapsed:.1f}s")
        if self.done:
            return f"{self.label} {self.done}{unit}  {elapsed:.1f}s"
        return f"{self.label} …  {elapsed:.1f}s"  # one long call: only the clock moves

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now))
        self.stream.flush()
        self._shown = True
        self._last_draw = now

    @contextmanager
    def ticking(self, every: float = 0.25) -> Iterator[Progress]:
        """Redraw from a background thread while one long call (a checkpoint load) runs, so
        the elapsed time moves although nothing calls :meth:`update`."""
        if not self.enabled:
            yield self
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                self.update(0)

        ticker = threading.Thread(target=tick, name="whalebone-progress", daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            stop.set()
            ticker.join()

    def close(self) -> None:
        if self._shown:
            self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
