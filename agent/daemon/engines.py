"""Engines for jobs, opened once per spec and shared by the jobs that name it.

Every spec ``whalebone run --engine`` takes works here (``whalebone.agent.settings``), plus one
for demos and tests of a daemon: ``replay:FILE``, a JSON list of completions where the n-th
model call *of a session* gets the n-th completion (n counted from the assistant turns already
in the prompt). Unlike ``scripted:FILE``, which hands completions out in the order calls
arrive, a replay is a function of the conversation, as a real model is: a session resumed after
a restart continues its script where it stopped, and concurrent jobs do not take each other's
completions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whalebone.dsml import tokens as T
from whalebone.engine.base import Engine, EngineError, GenerationRequest


def replay_engine(path: str | Path, **options: Any) -> Engine:
    from whalebone.engine.scripted import ScriptedEngine

    file = Path(path).expanduser()
    try:
        script = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot read the replay script {file}: {e}") from None
    if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
        raise EngineError(f"the replay script {file} must be a JSON list of completion strings")

    def completion(request: GenerationRequest) -> str:
        # Untrusted text is neutralised before it enters a prompt, so only real turns carry
        # the Assistant token; the prompt ends with the one this call answers.
        turn = (request.prompt or "").count(T.ASSISTANT) - 1
        if not 0 <= turn < len(script):
            raise EngineError(f"the replay script {file} has no completion for model call "
                              f"{turn + 1} of this session")
        return script[turn]

    options.setdefault("name", "replay")
    return ScriptedEngine(completion, **options)


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
        if spec.startswith("replay:"):
            return replay_engine(spec.partition(":")[2], **options)
        from whalebone.agent.settings import open_engine_spec

        try:
            return open_engine_spec(spec, options)
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
