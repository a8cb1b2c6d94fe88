"""The input box: multi-line editing, Enter sends, and a history of what was sent.

Enter sends; Ctrl+J (what a terminal sends for Ctrl+Enter), Shift+Enter or Alt+Enter start a new
line, since not every terminal (or SSH hop) can tell Shift+Enter from Enter. Up on the first
line and Down on the last walk the history, like a shell. With a ``history_file`` the history
outlives the app (JSON lines, the newest ``HISTORY_KEPT`` read back; the file is the user's
own, mode 0600, since what was typed may be private).
"""

from __future__ import annotations

import json
from pathlib import Path

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from whalebone.core.home import open_private

NEWLINE_KEYS = {"ctrl+j", "shift+enter", "alt+enter", "ctrl+enter"}
HISTORY_KEPT = 500


class PromptInput(TextArea):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, history_file: Path | None = None, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, compact=True,
                         placeholder="Message (Enter sends, Ctrl+J new line)",
                         **kwargs)  # type: ignore[arg-type]
        # A blinking cursor repaints the screen twice a second: over SSH that is traffic for
        # nothing, and screenshots of the app would depend on the instant they are taken.
        self.cursor_blink = False
        self.history_file = history_file
        self.sent: list[str] = read_history(history_file) if history_file else []
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
            if self.history_file is not None:
                append_history(self.history_file, text)
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


def read_history(path: Path) -> list[str]:
    """The newest entries of a history file; lines that are not JSON strings are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines[-HISTORY_KEPT:]:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, str):
            out.append(item)
    return out


def append_history(path: Path, text: str) -> None:
    try:
        with open_private(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(text, ensure_ascii=False) + "\n")
    except OSError:
        pass  # a history that cannot be written is not worth interrupting a session for
