"""The status bar widget: it shows its figures' two lines and marks a running step."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from tui_support import screen_text

from whalebone.tui.figures import StatusFigures
from whalebone.tui.status import StatusBar

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StatusOnly(App[None]):
    def __init__(self, figures: StatusFigures) -> None:
        super().__init__()
        self.figures = figures

    def compose(self) -> ComposeResult:
        yield StatusBar(self.figures)


async def test_the_bar_redraws_from_its_figures_and_marks_a_running_step() -> None:
    figures = StatusFigures(engine="deepseek", model="deepseek-v4-pro", window=1_048_576)
    app = StatusOnly(figures)
    async with app.run_test(size=(80, 4)) as pilot:
        bar = app.query_one(StatusBar)
        assert "deepseek·deepseek-v4-pro  thinking  [idle]" in screen_text(app)
        figures.state, figures.thinking = "running", "max"
        bar.show()
        await pilot.pause()
        assert "thinking" not in screen_text(app).split("\n")[0].replace("max", "")
        assert "[running]" in screen_text(app) and bar.has_class("running")
        figures.state = "idle"
        bar.show()
        assert not bar.has_class("running")


async def test_a_long_line_is_cut_not_wrapped() -> None:
    figures = StatusFigures(engine="router", model="a-model-with-a-very-long-name-" * 3,
                            window=1000)
    app = StatusOnly(figures)
    async with app.run_test(size=(80, 4)) as pilot:
        await pilot.pause()
        lines = screen_text(app).split("\n")
        assert lines[0].startswith("router·a-model") and lines[0].rstrip().endswith("…")
        assert lines[1].startswith("cache")
