"""The status bar: two lines that are always true (see :mod:`whalebone.tui.figures`)."""

from __future__ import annotations

from rich.text import Text as RichText
from textual.widgets import Static

from whalebone.tui.figures import StatusFigures


class StatusBar(Static):
    # A line too long for the terminal is cut with an ellipsis, never wrapped onto the next
    # figure's line (at 80 columns a long model name must not hide the cache and spend).
    DEFAULT_CSS = """
    StatusBar {
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, figures: StatusFigures, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.figures = figures

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        """Redraw from the figures (called after every change to them)."""
        first, second = self.figures.lines()
        self.set_class(self.figures.state == "running", "running")
        self.update(RichText(f"{first}\n{second}"))
