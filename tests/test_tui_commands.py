"""The command palette: what it offers and that choosing a command does it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_support import answer, make_runner, screen_text, wait_for

from whalebone.agent import AgentConfig
from whalebone.agent.store import SessionStore
from whalebone.tui.app import ChatApp
from whalebone.tui.modals import TextQuestion
from whalebone.tui.runner import ChatRunner

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def two_engines(tmp_path: Path) -> ChatApp:
    specs = []
    for name, model in (("a", "whalebone-local"), ("b", "deepseek-v4-flash")):
        script = tmp_path / f"{name}.jsonl"
        script.write_text(json.dumps(answer(f"engine {name}")) + "\n")
        specs.append(f"scripted:{script}?model={model}&name=engine-{name}")
    runner = ChatRunner(SessionStore(tmp_path / "s.db"), engine_specs=specs, workspace=tmp_path)
    return ChatApp(runner)


async def palette(pilot, query: str) -> None:
    await pilot.press("ctrl+p")
    await pilot.pause(0.1)
    await pilot.press(*query)
    await wait_for(pilot, lambda: query.split(":")[-1].strip()[:4] in screen_text(pilot.app))
    await pilot.pause(0.3)  # the palette's search settles
    await pilot.press("enter")
    await pilot.pause(0.1)


async def test_the_palette_switches_thinking_mode_and_engine(tmp_path: Path) -> None:
    app = two_engines(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert "engine-a·whalebone-local  thinking" in screen_text(app)
        await palette(pilot, "Thinking: chat")
        assert app.runner.config.thinking == "chat"
        await wait_for(pilot, lambda: "engine-a·whalebone-local  chat" in screen_text(app))
        await palette(pilot, "Engine: switch")
        await wait_for(pilot, lambda: "engine-b·deepseek-v4-flash" in screen_text(app))
        assert app.runner.engine.name == "engine-b"


async def test_the_palette_asks_for_a_memory_scope(tmp_path: Path) -> None:
    app = two_engines(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await palette(pilot, "Memory: attach")
        await wait_for(pilot, lambda: isinstance(app.screen, TextQuestion))
        await pilot.press("escape")  # cancelled: nothing attached
        await pilot.pause(0.1)
        assert app.runner.memory_scope is None and not isinstance(app.screen, TextQuestion)


async def test_the_palette_compacts_the_session_and_the_transcript_reports_it(
        tmp_path: Path) -> None:
    summary = "SUMMARY: the person said hello twice."
    runner = make_runner(tmp_path, [answer("First answer."), answer("Second answer."),
                                    answer(summary)], config=AgentConfig(keep_recent=1))
    assert not runner.can_compact  # no session yet: the palette does not offer it
    for text in ("hello", "hello again"):
        async for _ in runner.turn(text):
            pass
    sid = runner.session_id
    assert sid is not None and runner.can_compact
    app = ChatApp(runner, session_id=sid)
    async with app.run_test(size=(140, 30)) as pilot:  # the report on one line
        await wait_for(pilot, lambda: "Second answer." in screen_text(app))
        await palette(pilot, "Compact the session")
        await wait_for(pilot, lambda: not app.running
                       and "compacted: 5 → 4 messages" in screen_text(app))
        text = screen_text(app)
        report = next(line for line in text.splitlines() if "5 → 4 messages" in line)
        assert "tokens saved; cache hits" in report and "on the summary call" in report
        assert "[idle]" in text
    raw = runner.store.messages(sid)
    assert raw[-1]["role"] == "compaction" and summary in raw[-1]["summary"]["content"]
    assert [u.kind for u in runner.store.usage(sid)] == ["turn", "turn", "compaction"]
    summary_call = runner.store.usage(sid)[-1]
    assert summary_call.cache_hit_tokens > 0.8 * summary_call.prompt_tokens  # on the cache
