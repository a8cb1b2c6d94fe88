"""ScriptedEngine: scripted completions, real tokenizer and real prefix-hit accounting."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from conftest import stream_sync

from whalebone.dsml import tokens as T
from whalebone.dsml.tokenizer import load_tokenizer
from whalebone.engine.base import EngineError, GenerationRequest
from whalebone.engine.factory import EngineSpecError
from whalebone.engine.scripted import ScriptedEngine, ScriptExhausted, load_script

PROMPT = T.BOS + "You are terse." + T.USER + "Say hello." + T.ASSISTANT + T.THINK_START


def _request(prompt: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **kw)  # type: ignore[arg-type]


def test_streams_deltas_that_join_to_the_text_without_the_stop() -> None:
    engine = ScriptedEngine(["Greeting.</think>Hello!" + T.EOS], delta_chars=2)
    deltas, fin = stream_sync(engine, _request(PROMPT))
    assert "".join(deltas) == fin.text == "Greeting.</think>Hello!"
    assert fin.finish_reason == "stop"
    tok = load_tokenizer()
    assert fin.usage.prompt_tokens == len(tok.encode(PROMPT))
    assert fin.usage.completion_tokens == len(tok.encode(fin.text)) + 1  # + EOS


def test_second_turn_of_an_append_only_conversation_hits_the_cache() -> None:
    first = "Greeting.</think>Hello!" + T.EOS
    engine = ScriptedEngine([first, "Ok.</think>Bye." + T.EOS])
    one = anyio.run(engine.generate, _request(PROMPT))
    assert one.usage.prompt_cache_hit_tokens == 0
    second_prompt = PROMPT + first + T.USER + "Again." + T.ASSISTANT + T.THINK_START
    two = anyio.run(engine.generate, _request(second_prompt))
    tok = load_tokenizer()
    # Everything the engine processed last time (prompt + completion, not the final EOS).
    assert two.usage.prompt_cache_hit_tokens == len(tok.encode(PROMPT + first[: -len(T.EOS)]))
    assert (two.usage.prompt_cache_hit_tokens + two.usage.prompt_cache_miss_tokens
            == two.usage.prompt_tokens)


def test_max_tokens_and_stop_strings_set_the_finish_reason() -> None:
    engine = ScriptedEngine(["a b c d e f g h" + T.EOS, "alpha STOP beta" + T.EOS, "no end"])
    short = anyio.run(engine.generate, _request(PROMPT, max_tokens=2))
    assert short.finish_reason == "length" and short.usage.completion_tokens == 2
    stopped = anyio.run(engine.generate, _request(PROMPT, stop=["STOP"]))
    assert stopped.finish_reason == "stop" and stopped.text == "alpha "
    unended = anyio.run(engine.generate, _request(PROMPT))
    assert unended.finish_reason == "length" and unended.text == "no end"


def test_exhausted_script_and_empty_request_are_clear_errors() -> None:
    engine = ScriptedEngine([])
    with pytest.raises(ScriptExhausted):
        anyio.run(engine.generate, _request(PROMPT))
    with pytest.raises(EngineError, match="prompt"):
        anyio.run(engine.generate, GenerationRequest())


def test_cancellation_stops_the_stream() -> None:
    async def go() -> int:
        engine = ScriptedEngine(["x" * 300 + T.EOS], delta_chars=1, delay=0.01)
        got = 0
        with anyio.move_on_after(0.2):
            async for _ in engine.stream(_request(PROMPT)):
                got += 1
        return got

    got = anyio.run(go)
    assert 0 < got < 300


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_script_holds_strings_or_completion_objects_and_skips_comments(tmp_path: Path) -> None:
    script = write(tmp_path / "s.jsonl", "# a demo", json.dumps("one"), "",
                   json.dumps({"completion": "two", "note": "kept out"}))
    assert load_script(script) == ["one", "two"]


def test_a_script_may_be_one_json_list_as_the_engine_factory_takes_it(tmp_path: Path) -> None:
    script = write(tmp_path / "s.json", json.dumps(["one", "two\nlines"], indent=2))
    assert load_script(script) == ["one", "two\nlines"]
    with pytest.raises(EngineSpecError, match="a JSON list of completion strings"):
        load_script(write(tmp_path / "bad.json", json.dumps(["one", 2])))


@pytest.mark.parametrize("line, problem", [
    ("{not json", "s.jsonl:2: not JSON"),
    ("42", "s.jsonl:2: expected a JSON string"),
    ('{"text": "x"}', "s.jsonl:2: expected a JSON string"),
])
def test_a_bad_script_line_is_named_by_its_number(tmp_path: Path, line: str,
                                                   problem: str) -> None:
    script = write(tmp_path / "s.jsonl", json.dumps("fine"), line)
    with pytest.raises(EngineSpecError, match=problem):
        load_script(script)


def test_an_empty_or_missing_script_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineSpecError, match="holds no completions"):
        load_script(write(tmp_path / "empty.jsonl", "# nothing"))
    with pytest.raises(EngineSpecError, match="cannot read"):
        load_script(tmp_path / "absent.jsonl")
