"""Engine specs for the chat: scripted replays from a file, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from whalebone.dsml.errors import WhaleboneError
from whalebone.engine.base import Finished, GenerationRequest, TextDelta
from whalebone.tui.engines import ChatEngineError, load_script, open_chat_engine


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
    with pytest.raises(ChatEngineError, match="a JSON list of completion strings"):
        load_script(write(tmp_path / "bad.json", json.dumps(["one", 2])))


@pytest.mark.parametrize("line, problem", [
    ("{not json", "s.jsonl:2: not JSON"),
    ("42", "s.jsonl:2: expected a JSON string"),
    ('{"text": "x"}', "s.jsonl:2: expected a JSON string"),
])
def test_a_bad_script_line_is_named_by_its_number(tmp_path: Path, line: str,
                                                   problem: str) -> None:
    script = write(tmp_path / "s.jsonl", json.dumps("fine"), line)
    with pytest.raises(ChatEngineError, match=problem):
        load_script(script)


def test_an_empty_or_missing_script_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChatEngineError, match="holds no completions"):
        load_script(write(tmp_path / "empty.jsonl", "# nothing"))
    with pytest.raises(ChatEngineError, match="cannot read"):
        load_script(tmp_path / "absent.jsonl")


def test_a_scripted_spec_replays_its_file_with_the_options_given(tmp_path: Path) -> None:
    script = write(tmp_path / "s.jsonl", json.dumps("Hi there.<｜end▁of▁sentence｜>"))
    engine = open_chat_engine(f"scripted:{script}?delay=0.001&model=deepseek-v4-flash"
                              "&delta_chars=4")
    assert engine.model == "deepseek-v4-flash" and engine.delay == 0.001

    async def collect() -> tuple[list[str], Finished]:
        deltas, finished = [], None
        async for event in engine.stream(GenerationRequest(prompt="<｜begin▁of▁sentence｜>hi")):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                finished = event
        assert finished is not None
        return deltas, finished

    deltas, finished = anyio.run(collect)
    assert deltas == ["Hi t", "here", "."] and finished.finish_reason == "stop"


@pytest.mark.parametrize("query, problem", [
    ("speed=3", "unknown scripted-engine option 'speed'"),
    ("delay=soon", "delay='soon' is not a float"),
])
def test_bad_scripted_options_are_refused(tmp_path: Path, query: str, problem: str) -> None:
    script = write(tmp_path / "s.jsonl", json.dumps("x"))
    with pytest.raises(ChatEngineError, match=problem):
        open_chat_engine(f"scripted:{script}?{query}")


def test_an_engine_that_cannot_be_opened_is_a_clear_error() -> None:
    with pytest.raises(WhaleboneError):
        open_chat_engine("no-such-engine-kind:nowhere")
    with pytest.raises(ChatEngineError, match="empty"):
        open_chat_engine("  ")
