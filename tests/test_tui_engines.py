"""Engine specs for the chat: scripted replays from a file, and clear errors. (The script
file's format is the engine room's: tests/test_engine_scripted.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import stream_sync

from whalebone.core.errors import WhaleboneError
from whalebone.engine.base import GenerationRequest
from whalebone.tui.engines import ChatEngineError, open_chat_engine


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_scripted_spec_replays_its_file_with_the_options_given(tmp_path: Path) -> None:
    script = write(tmp_path / "s.jsonl", json.dumps("Hi there.<｜end▁of▁sentence｜>"))
    engine = open_chat_engine(f"scripted:{script}?delay=0.001&model=deepseek-v4-flash"
                              "&delta_chars=4")
    assert engine.model == "deepseek-v4-flash" and engine.delay == 0.001

    deltas, finished = stream_sync(engine, GenerationRequest(prompt="<｜begin▁of▁sentence｜>hi"))
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
