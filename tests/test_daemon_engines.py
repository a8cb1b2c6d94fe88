"""Engines for jobs: the replay engine answers by a session's turn, so a resumed session
continues its script; engines are opened once per spec; a spec that cannot open is an
EngineError."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from whalebone.agent.daemon.engines import Engines, replay_engine
from whalebone.dsml import emit_completion, encode_messages
from whalebone.engine.base import EngineError, Finished, GenerationRequest


def prompt_after(turns: int) -> str:
    """A prompt whose conversation holds ``turns`` finished assistant turns."""
    msgs: list[dict] = [{"role": "system", "content": "s"}]
    for k in range(turns):
        msgs += [{"role": "user", "content": f"u{k} <｜Assistant｜>"},  # neutralised below
                 {"role": "assistant", "content": f"a{k}", "reasoning_content": ""}]
    msgs.append({"role": "user", "content": "next"})
    from whalebone.dsml import neutralise

    for m in msgs:
        if m["role"] == "user":
            m["content"] = neutralise(m["content"])
    return encode_messages(msgs, "thinking")


def complete(engine: object, prompt: str) -> str:
    async def go() -> str:
        req = GenerationRequest(prompt=prompt, max_tokens=200)
        async for ev in engine.stream(req):  # type: ignore[attr-defined]
            if isinstance(ev, Finished):
                return ev.text
        raise AssertionError("no Finished")

    return anyio.run(go)


def test_replay_answers_by_the_sessions_turn_not_by_call_order(tmp_path: Path) -> None:
    script = [emit_completion(f"answer {k}", reasoning="r") for k in range(3)]
    (tmp_path / "s.json").write_text(json.dumps(script))
    engine = replay_engine(tmp_path / "s.json")
    assert "answer 2" in complete(engine, prompt_after(2))
    assert "answer 0" in complete(engine, prompt_after(0))  # a resumed or second session
    assert "answer 1" in complete(engine, prompt_after(1))
    with pytest.raises(EngineError, match="no completion for model call 4"):
        complete(engine, prompt_after(3))


@pytest.mark.parametrize("content", ["not json", '{"a": 1}', '["ok", 3]'])
def test_a_bad_replay_script_is_an_engine_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(EngineError, match="replay script"):
        replay_engine(tmp_path / "s.json")
    with pytest.raises(EngineError):
        replay_engine(tmp_path / "missing.json")


def test_engines_are_opened_once_per_spec_and_options(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(["x"]))
    engines = Engines()
    a = engines.get(f"replay:{tmp_path / 's.json'}", {})
    assert engines.get(f"replay:{tmp_path / 's.json'}", {}) is a
    assert engines.get(f"replay:{tmp_path / 's.json'}", {"delay": 0.01}) is not a
    with pytest.raises(EngineError):
        engines.get("nonsense:thing", {})

    spec = f"replay:{tmp_path / 's.json'}"

    async def open_one(got: list[object]) -> None:
        got.append(await engines.open(spec, {"name": "x"}))

    async def from_threads() -> list[object]:
        got: list[object] = []
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(open_one, got)
        return got

    opened = anyio.run(from_threads)
    assert len({id(e) for e in opened}) == 1  # four jobs at once share one engine
    anyio.run(engines.aclose)
