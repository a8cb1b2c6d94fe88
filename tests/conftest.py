"""Shared test helpers: a private home folder for every test, the V4 reference vectors,
streaming an engine to its end, and one torch thread for the engine's tensor tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.engine.base import Finished, GenerationRequest, TextDelta


@pytest.fixture(autouse=True)
def whalebone_home(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own ``WHALEBONE_HOME`` (like simonw/llm's ``user_path``): nothing a
    test runs, in process or in a subprocess that inherits the environment, reads or writes
    the real ``~/.whalebone``. A test that needs the home asks for this fixture."""
    home = tmp_path_factory.mktemp("whalebone-home")
    monkeypatch.setenv("WHALEBONE_HOME", str(home))
    return home


VECTORS = Path(__file__).resolve().parent / "vectors"

# (vector number, thinking mode) as published with V4's reference encoder.
VECTOR_MODES = [(1, "thinking"), (2, "thinking"), (3, "thinking"), (4, "chat")]


def load_vector(n: int) -> tuple[list[dict[str, Any]], str]:
    """The messages of vector ``n`` (tools attached to messages[0] for vector 1) and its
    expected rendering."""
    data = json.loads((VECTORS / f"test_input_{n}.json").read_text(encoding="utf-8"))
    if isinstance(data, dict):
        messages = data["messages"]
        messages[0]["tools"] = data["tools"]
    else:
        messages = data
    return messages, (VECTORS / f"test_output_{n}.txt").read_text(encoding="utf-8")


async def collect_stream(engine: Any, request: GenerationRequest) -> tuple[list[str], Finished]:
    """Stream ``request`` on ``engine`` to its end: the text deltas and the final event."""
    deltas: list[str] = []
    finished = None
    async for event in engine.stream(request):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            finished = event
    assert finished is not None, "the stream ended without a Finished event"
    return deltas, finished


def stream_sync(engine: Any, request: GenerationRequest) -> tuple[list[str], Finished]:
    """:func:`collect_stream` in a fresh event loop."""
    return anyio.run(collect_stream, engine, request)


def passes_around_cancel(engine: Any, request: GenerationRequest, deltas: int = 3
                         ) -> tuple[int, int]:
    """Cancel ``request``'s stream after ``deltas`` text deltas: the engine's forward passes at
    the cancel and a moment later (equal when nothing runs on after it)."""

    async def go() -> tuple[int, int]:
        seen = 0
        with anyio.CancelScope() as scope:
            async for ev in engine.stream(request):
                if isinstance(ev, TextDelta):
                    seen += 1
                    if seen == deltas:
                        scope.cancel()
        at_cancel = engine.forward_passes
        await anyio.sleep(0.3)
        return at_cancel, engine.forward_passes

    return anyio.run(go)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Two OpenMP threads on a shared 2-core CI box spin against each other (decode 20x
    slower, measured) and tiny matrices gain nothing from threads: one thread keeps the
    engine's tensor tests fast and changes no result. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # only the engine's tests need it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
