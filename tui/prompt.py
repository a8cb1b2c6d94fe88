"""The input box: multi-line editing, Enter sends, and a history of what was sent.

Enter sends; Ctrl+J (what a terminal sends for Ctrl+Enter), Shift+Enter or Alt+Enter start a new
line, since not every terminal (or SSH hop) can tell Shift+Enter from Enter. Up on the first
line and Down on the last walk the history, like a shell.
"""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = {"ctrl+j", "shift+enter", "alt+enter", "ctrl+enter"}


class PromptInput(TextArea):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, compact=True,
                         placeholder="Message (Enter sends, Ctrl+J new line)",
                         **kwargs)  # type: ignore[arg-type]
        # A blinking cursor repaints the screen twice a second: over SSH that is traffic for
        # nothing, and screenshots of the app would depend on the instant they are taken.
        self.cursor_blink = False
        self.sent: list[str] = []
        self._cursor: int | None = None  # index into history while walking it
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        row = self.cursor_location[0]
        if event.key == "up" and row == 0 and self.sent:
            event.stop()
            event.prevent_default()
            self.walk(-1)
            return
        if event.key == "down" and row == self.document.line_count - 1 and \
                self._cursor is not None:
            event.stop()
            event.prevent_default()
            self.walk(+1)
            return
        await super()._on_key(event)

    def submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._cursor = None
        self.clear()
        self.post_message(self.Submitted(text))

    def walk(self, step: int) -> None:
        """Move through the history; walking past the newest entry restores the draft."""
        if self._cursor is None:
            self._draft = self.text
            self._cursor = len(self.sent)
        self._cursor = max(0, self._cursor + step)
        if self._cursor >= len(self.sent):
            self._cursor = None
            self.load_text(self._draft)
        else:
            self.load_text(self.sent[self._cursor])
        self.move_cursor(self.document.end)
