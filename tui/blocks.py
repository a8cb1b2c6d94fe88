"""The widgets a transcript is made of: a user's turn, a notice, the welcome, the model's
reasoning (folded), a tool call's panel, and an assistant turn that holds them in the order
they arrive. Text from the model and from tools is shown as text (never as Textual markup), so
it cannot restyle or hide anything on the screen."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text as RichText
from textual.containers import Vertical
from textual.widgets import Collapsible, Static

from whalebone.agent.loop import _DATE as RUNTIME_DATE  # the runtime's own pattern for it
from whalebone.tui.stream import FoldedText, LiveMarkdown

FOLD_LINES = 8  # results longer than this show their last lines only
FOLD_CHARS = 600
ARGS_CHARS = 2_000  # arguments beyond this are cut on screen (the store keeps them whole)


def plain(text: str, style: str = "") -> RichText:
    return RichText(text, style=style)


class UserTurn(Static):
    """What the person typed."""

    def __init__(self, text: str) -> None:
        super().__init__(plain(text), classes="user-turn")


def user_text(text: str) -> str:
    """What the person typed, without the date line the runtime appends to a stored turn."""
    return RUNTIME_DATE.sub("", text)


class Welcome(Static):
    """What an empty session shows until the first message: where the chat runs and how."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        width = max(len(k) for k, _ in items)
        text = RichText("whalebone chat: type a message and press Enter\n\n", style="bold")
        for key, value in items:
            text.append(f"{key.rjust(width)}  ", style="dim")
            text.append(f"{value}\n")
        super().__init__(text, classes="welcome")


class Notice(Static):
    """A line from whalebone itself: warnings, stops, cancellations, errors."""

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(plain(text), classes=f"notice notice-{kind}")


class ReasoningBlock(Collapsible):
    """The model's reasoning, collapsed; streamed text is buffered and shown a few times a
    second. While folded only the title's count changes; opened, a long chain of thought shows
    its end (the whole is one click away), so a refresh costs the same at any length."""

    def __init__(self, text: str = "", *, live: bool = False) -> None:
        self._body = FoldedText(text, classes="reasoning-text")
        self._dirty = False
        super().__init__(self._body, title=self._heading(live), collapsed=True,
                         classes="reasoning")

    @property
    def text(self) -> str:
        return self._body.text

    def _heading(self, live: bool) -> str:
        n = len(self._body)
        return f"Thinking… ({n} chars)" if live else f"Reasoning ({n} chars)"

    def on_mount(self) -> None:
        if self.title.startswith("Thinking"):  # live: shown a few times a second
            self.set_interval(0.1, self.flush)

    def append(self, text: str) -> None:
        self._body.append(text)
        self._dirty = True

    def flush(self, *, live: bool = True) -> None:
        if self._dirty or not live:
            if not self.collapsed:
                self._body.show()
            self.title = self._heading(live)
            self._dirty = False

    def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        if event.collapsible is self:
            self._body.show()  # what arrived while folded


class ToolPanel(Vertical):
    """One tool call: name, status and duration on top, arguments, then the result (a long one
    shows its end). The duration leaves out the time the call waited for a person."""

    DEFAULT_CSS = "ToolPanel { height: auto; }"

    def __init__(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.call_id = call_id
        self.tool_name = name
        self.status = "running"
        self.seconds: float | None = None
        self.waited = 0.0  # seconds spent waiting for a person's approval
        self._asked_at: float | None = None
        self._result_note = ""
        args = "\n".join(f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
                         for key, value in arguments.items()) or "(no arguments)"
        if len(args) > ARGS_CHARS:
            args = args[:ARGS_CHARS] + f"… [{len(args) - ARGS_CHARS} more characters]"
        self._header = Static(self._header_text(), classes="tool-header")
        self._args = Static(plain(args), classes="tool-args")
        self._result: Static | None = None
        super().__init__(classes="tool-panel running")

    def compose(self) -> Any:
        yield self._header
        yield self._args
        if self._result is not None:  # finished before it was mounted (a stored session)
            yield self._result

    def _header_text(self) -> RichText:
        took = "" if self.seconds is None else f"  {self.seconds:.2f}s"
        if self.waited >= 0.05:
            took += f" (+{self.waited:.1f}s awaiting approval)"
        return RichText.assemble(("⚙ ", "bold"), (self.tool_name, "bold"),
                                 f"  {self.status}{took}{self._result_note}")

    def waiting(self, waiting: bool) -> None:
        """Say that the call waits for a person's approval (and no longer, once decided)."""
        if self.status in ("running", "awaiting approval"):
            self.status = "awaiting approval" if waiting else "running"
            now = time.monotonic()
            if waiting:
                self._asked_at = now
            elif self._asked_at is not None:
                self.waited += now - self._asked_at
                self._asked_at = None
            self._header.update(self._header_text())

    def finish(self, content: str, *, is_error: bool, seconds: float | None,
               status: str | None = None) -> None:
        self.status = status or ("error" if is_error else "ok")
        self.waiting(False)
        # The tool's own time: a person deciding is not the command being slow.
        self.seconds = None if seconds is None else max(0.0, seconds - self.waited)
        self.set_class(False, "running")
        self.add_class("error" if is_error else "ok")
        lines = content.count("\n") + 1
        long = lines > FOLD_LINES or len(content) > FOLD_CHARS
        self._result_note = f"  · {lines} lines, {len(content)} chars" if long else ""
        self._header.update(self._header_text())
        # A long result shows its end (where errors and summaries are); the rest on demand.
        self._result = (FoldedText(content, chars=FOLD_CHARS, lines=FOLD_LINES,
                                   classes="tool-result") if long
                        else Static(plain(content), classes="tool-result"))
        if self.is_mounted:
            self.mount(self._result)


class AssistantTurn(Vertical):
    """One model step: reasoning, text and tool calls, in the order they arrive."""

    DEFAULT_CSS = "AssistantTurn { height: auto; }"

    def __init__(self, *children: Any) -> None:
        super().__init__(*children, classes="assistant-turn")
        self.reasoning: ReasoningBlock | None = None
        self.markdown: LiveMarkdown | None = None

    @property
    def text(self) -> str:
        return self.markdown.source if self.markdown is not None else ""

    async def add_reasoning(self, text: str) -> None:
        if self.reasoning is None:
            self.reasoning = ReasoningBlock(live=True)
            await self.mount(self.reasoning)
        self.reasoning.append(text)

    async def add_text(self, text: str) -> None:
        if self.markdown is None:
            if not text.strip():
                return  # the blank line after </think> is not worth a widget
            text = text.lstrip("\n")
            self.markdown = LiveMarkdown(classes="assistant-text")
            await self.mount(self.markdown)
        self.markdown.write(text)

    async def close(self) -> None:
        if self.markdown is not None:
            await self.markdown.stop()
        if self.reasoning is not None:
            self.reasoning.flush(live=False)
