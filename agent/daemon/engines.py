"""Engines for jobs, opened once per spec and shared by the jobs that name it.

Every spec ``whalebone.engine.factory.open_engine`` takes works here, ``replay:FILE`` among
them (made for daemon demos and tests: the n-th model call *of a session* gets the n-th
completion, so a session resumed after a restart continues its script and concurrent jobs do
not take each other's completions; see ``whalebone.engine.scripted.ReplayEngine``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whalebone.engine.base import Engine, EngineError


def replay_engine(path: str | Path, **options: Any) -> Engine:
    """The ``replay:FILE`` engine for ``path``."""
    from whalebone.engine.factory import open_engine

    return open_engine(f"replay:{path}", **options)


class Engines:
    """The engines the daemon's jobs run on, by spec; closed together at shutdown."""

    def __init__(self) -> None:
        self._open: dict[str, Engine] = {}
        self._opening: Any = None  # an anyio.Lock, made inside the event loop

    async def open(self, spec: str, options: dict[str, Any]) -> Engine:
        """:meth:`get` from a worker thread: loading a checkpoint takes seconds, and the
        daemon's API and other jobs must not wait on it. One opening at a time, so two jobs
        naming one spec share one engine."""
        import anyio

        key = json.dumps([spec, options], sort_keys=True, default=str)
        if key in self._open:  # the usual case: no thread, no lock
            return self._open[key]
        if self._opening is None:
            self._opening = anyio.Lock()
        async with self._opening:
            return await anyio.to_thread.run_sync(self.get, spec, options)

    def get(self, spec: str, options: dict[str, Any]) -> Engine:
        key = json.dumps([spec, options], sort_keys=True, default=str)
        engine = self._open.get(key)
        if engine is None:
            engine = self._make(spec, dict(options))
            self._open[key] = engine
        return engine

    @staticmethod
    def _make(spec: str, options: dict[str, Any]) -> Engine:
        from whalebone.engine.factory import open_engine

        try:
            return open_engine(spec, **options)
        except EngineError:
            raise
        except (OSError, ValueError, RuntimeError) as e:  # a checkpoint that will not load
            raise EngineError(f"{type(e).__name__}: {e}") from None

    async def aclose(self) -> None:
        for engine in self._open.values():
            try:
                await engine.aclose()
            except Exception:  # closing is best effort at shutdown
                pass
        self._open.clear()
