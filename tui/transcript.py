"""The transcript of a session: user turns, assistant text as Markdown, reasoning folded away,
and one panel per tool call with its arguments, status, duration and result.

It is fed two ways with the same widgets: :meth:`TranscriptView.load` rebuilds a stored session
from its messages, and :meth:`TranscriptView.feed` follows a live run event by event. Text from
the model and from tools is shown as text (never as Textual markup), so it cannot restyle or
hide anything on the screen.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from whalebone.agent import events as ev
from whalebone.tui.blocks import (
    AssistantTurn,
    Notice,
    ReasoningBlock,
    ToolPanel,
    UserTurn,
    Welcome,
    plain,
    user_text,
)
from whalebone.tui.stream import MarkdownText

__all__ = ["AssistantTurn", "Notice", "ReasoningBlock", "ToolPanel", "TranscriptView",
           "UserTurn", "Welcome"]

LAZY_TURNS = 8  # a stored session shows its last turns first; earlier ones on demand


class EarlierTurns(Static, can_focus=True):
    """The line above a long stored session's shown turns: a click, Enter or scrolling to
    the top builds the next batch."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "show", "Show earlier turns")]

    def __init__(self) -> None:
        super().__init__("", classes="earlier-turns")

    def show(self, count: int) -> None:
        self.update(plain(f"▲ {count} earlier turn{'s' if count != 1 else ''} "
                           "(scroll up, click or Enter to show more)"))

    async def on_click(self) -> None:
        await self.action_show()

    async def action_show(self) -> None:
        view = self.parent
        if isinstance(view, TranscriptView):
            await view.show_earlier()


class TranscriptView(VerticalScroll):
    """A session's transcript, live or rebuilt from the store."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.turn: AssistantTurn | None = None
        self.panels: dict[str, ToolPanel] = {}
        self._earlier: list[list[dict[str, Any]]] = []  # stored turns not built yet
        self._results: dict[str, str] = {}
        self._failed: frozenset[str] = frozenset()
        self._marker: EarlierTurns | None = None
        self._loading = False
        self.lazy_turns = LAZY_TURNS

    def on_mount(self) -> None:
        # Follow the stream at the bottom until the person scrolls up to read; no scroll call
        # per delta (that was a layout pass for every three characters).
        self.anchor()

    async def clear(self) -> None:
        await self.close_turn()
        self.panels.clear()
        self._earlier, self._marker = [], None
        await self.remove_children()

    async def add(self, widget: Static | Vertical) -> None:
        await self.mount(widget)

    @property
    def shown_turns(self) -> int:
        return sum(1 for child in self.children if isinstance(child, UserTurn))

    async def welcome(self, items: list[tuple[str, str]]) -> None:
        await self.clear()
        await self.add(Welcome(items))

    async def user(self, text: str) -> None:
        await self.close_turn()
        for welcome in self.query(Welcome):
            await welcome.remove()
        await self.add(UserTurn(text))
        self.scroll_end(animate=False)
        self.anchor()  # a new message follows its answer again, wherever the person had read

    async def notice(self, text: str, kind: str = "info") -> None:
        await self.add(Notice(text, kind))

    async def close_turn(self) -> None:
        if self.turn is not None:
            await self.turn.close()
            self.turn = None

    async def _current(self) -> AssistantTurn:
        if self.turn is None:
            self.turn = AssistantTurn()
            await self.add(self.turn)
        return self.turn

    async def feed(self, event: Any) -> None:
        """Show one agent event."""
        if isinstance(event, ev.StepStarted):
            await self.close_turn()
        elif isinstance(event, ev.Reasoning):
            await (await self._current()).add_reasoning(event.text)
        elif isinstance(event, ev.AnswerText):
            await (await self._current()).add_text(event.text)
        elif isinstance(event, ev.ToolCalled):
            panel = ToolPanel(event.call_id, event.name, event.arguments)
            self.panels[event.call_id] = panel
            await (await self._current()).mount(panel)
        elif isinstance(event, ev.ToolFinished):
            panel = self.panels.get(event.call_id)
            if panel is not None:
                panel.finish(event.content, is_error=event.is_error, seconds=event.seconds)
        elif isinstance(event, ev.Compacted):
            await self.close_turn()
            after = (f"{event.hit_rate_after:.0%} after" if event.hit_rate_after is not None
                     else f"{event.summary_hit_rate:.0%} on the summary call")
            await self.notice(f"⇣ compacted: {event.messages_before} → {event.messages_after} "
                              f"messages, {event.tokens_saved} tokens saved; cache hits "
                              f"{event.hit_rate_before:.0%} before, {after}", "info")
        elif isinstance(event, ev.RunWarning):
            await self.notice(f"⚠ {event.kind}: {event.message}", "warning")
        elif isinstance(event, ev.Done):
            await self.close_turn()
            if event.reason != "answer":
                detail = f": {event.message}" if event.message else ""
                await self.notice(f"■ stopped ({event.reason}){detail}", "stop")

    def awaiting(self, tool: str, waiting: bool) -> None:
        """Mark the running calls of ``tool`` as waiting for a person (or not)."""
        for panel in self.panels.values():
            if panel.tool_name == tool:
                panel.waiting(waiting)

    async def interrupted(self, text: str, kind: str = "stop") -> None:
        """The run ended without a Done (cancelled or failed): mark what was in flight."""
        await self.close_turn()
        for panel in self.panels.values():
            if panel.status in ("running", "awaiting approval"):
                panel.finish("(no result: the run ended first)", is_error=True, seconds=None,
                             status="cancelled")
        await self.notice(text, kind)

    async def load(self, messages: list[dict[str, Any]],
                   failed: frozenset[str] | set[str] = frozenset()) -> None:
        """Rebuild a stored session (system messages are not shown); ``failed`` names the
        tool calls the store's journal records as errors. Only the last :data:`LAZY_TURNS`
        turns are built; earlier ones wait above, behind a line that loads them (scrolling to
        the top does too), so a session of any length opens at once."""
        await self.clear()
        self._results = {str(m.get("tool_call_id", "")): str(m.get("content") or "")
                         for m in messages if m.get("role") == "tool"}
        self._failed = frozenset(failed)
        turns: list[list[dict[str, Any]]] = []
        for msg in messages:
            if msg.get("role") in ("user", "compaction") or not turns:
                turns.append([])
            turns[-1].append(msg)
        shown = ("user", "assistant", "compaction")  # not a turn: the system prompt alone
        self._earlier = [t for t in turns if any(m.get("role") in shown for m in t)]
        await self._show_earlier()
        self.scroll_end(animate=False)

    async def _show_earlier(self) -> None:
        """Build the next :data:`LAZY_TURNS` stored turns above what is shown."""
        n = self.lazy_turns
        batch, self._earlier = self._earlier[-n:], self._earlier[:-n]
        widgets: list[Static | Vertical] = []
        for msg in (m for turn in batch for m in turn):
            role = msg.get("role")
            if role == "user":
                widgets.append(UserTurn(user_text(str(msg.get("content") or ""))))
            elif role == "assistant":
                widgets.append(AssistantTurn(*self._stored_turn(msg)))
            elif role == "compaction":
                widgets.append(Notice("⇣ compacted: older turns were replaced by a summary"))
        marker = self._marker
        with self.app.batch_update():
            if widgets and marker is not None:
                await self.mount_all(widgets, after=marker)
            elif widgets:
                await self.mount_all(widgets, before=0 if self.children else None)
        if self._earlier and marker is None:
            self._marker = EarlierTurns()
            await self.mount(self._marker, before=0)
        elif not self._earlier and marker is not None:
            self._marker = None
            await marker.remove()
        if self._marker is not None:
            self._marker.show(len(self._earlier))

    async def show_earlier(self) -> None:
        """Load the next batch of earlier turns, keeping what was on screen where it was."""
        if not self._earlier or self._loading:
            return
        self._loading = True
        try:
            anchor = next((c for c in self.children if not isinstance(c, EarlierTurns)), None)
            await self._show_earlier()
            if anchor is not None:
                self.call_after_refresh(self.scroll_to_widget, anchor, top=True, animate=False)
        finally:
            self._loading = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value and self._earlier:  # the person scrolled to the top
            self.call_later(self.show_earlier)

    def _stored_turn(self, msg: dict[str, Any]) -> list[Any]:
        children: list[Any] = []
        if msg.get("reasoning_content"):
            children.append(ReasoningBlock(str(msg["reasoning_content"])))
        if str(msg.get("content") or "").strip():
            children.append(MarkdownText(str(msg["content"]), classes="assistant-text"))
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function", {})
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {"(unparsed)": fn.get("arguments")}
            panel = ToolPanel(str(tc.get("id", "")), str(fn.get("name", "?")),
                              args if isinstance(args, dict) else {"value": args})
            self.panels[panel.call_id] = panel
            content = self._results.get(panel.call_id)
            if content is None:  # the run stopped (a crash, a kill) before a result
                panel.finish("(no result: the run ended before this call finished)",
                             is_error=True, seconds=None, status="interrupted")
            else:
                panel.finish(content, is_error=panel.call_id in self._failed, seconds=None)
            children.append(panel)
        return children
