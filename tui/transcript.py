"""The transcript of a session: user turns, assistant text as Markdown, reasoning folded away,
and one panel per tool call with its arguments, status, duration and result.

It is fed two ways with the same widgets: :meth:`TranscriptView.load` rebuilds a stored session
from its messages, and :meth:`TranscriptView.feed` follows a live run event by event. Text from
the model and from tools is shown as text (never as Textual markup), so it cannot restyle or
hide anything on the screen.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text as RichText
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from whalebone.agent import events as ev

FOLD_LINES = 8  # results longer than this start folded
FOLD_CHARS = 600
ARGS_CHARS = 2_000  # arguments beyond this are cut on screen (the store keeps them whole)


def _plain(text: str, style: str = "") -> RichText:
    return RichText(text, style=style)


class UserTurn(Static):
    """What the person typed."""

    def __init__(self, text: str) -> None:
        super().__init__(_plain(text), classes="user-turn")


class Notice(Static):
    """A line from whalebone itself: warnings, stops, cancellations, errors."""

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(_plain(text), classes=f"notice notice-{kind}")


class ReasoningBlock(Collapsible):
    """The model's reasoning, collapsed; streamed text is buffered and shown a few times a
    second, so a long chain of thought does not re-render on every delta."""

    def __init__(self, text: str = "", *, live: bool = False) -> None:
        self._parts = [text] if text else []
        self._body = Static(_plain(text), classes="reasoning-text")
        self._dirty = False
        super().__init__(self._body, title=self._heading(live), collapsed=True,
                         classes="reasoning")

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def _heading(self, live: bool) -> str:
        n = sum(len(p) for p in self._parts)
        return f"Thinking… ({n} chars)" if live else f"Reasoning ({n} chars)"

    def on_mount(self) -> None:
        self.set_interval(0.1, self.flush)

    def append(self, text: str) -> None:
        self._parts.append(text)
        self._dirty = True

    def flush(self, *, live: bool = True) -> None:
        if self._dirty or not live:
            self._body.update(_plain(self.text))
            self.title = self._heading(live)
            self._dirty = False


class ToolPanel(Vertical):
    """One tool call: name and status on top, arguments, then the result (long ones folded)."""

    def __init__(self, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        self.call_id = call_id
        self.tool_name = name
        self.status = "running"
        self.seconds: float | None = None
        args = "\n".join(f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
                         for key, value in arguments.items()) or "(no arguments)"
        if len(args) > ARGS_CHARS:
            args = args[:ARGS_CHARS] + f"… [{len(args) - ARGS_CHARS} more characters]"
        self._header = Static(self._header_text(), classes="tool-header")
        self._args = Static(_plain(args), classes="tool-args")
        super().__init__(self._header, self._args, classes="tool-panel running")

    def _header_text(self) -> RichText:
        took = "" if self.seconds is None else f"  {self.seconds:.2f}s"
        return RichText.assemble(("⚙ ", "bold"), (self.tool_name, "bold"),
                                 f"  {self.status}{took}")

    def waiting(self, waiting: bool) -> None:
        """Say that the call waits for a person's approval (and no longer, once decided)."""
        if self.status in ("running", "awaiting approval"):
            self.status = "awaiting approval" if waiting else "running"
            self._header.update(self._header_text())

    def finish(self, content: str, *, is_error: bool, seconds: float | None,
               status: str | None = None) -> None:
        self.status = status or ("error" if is_error else "ok")
        self.seconds = seconds
        self.set_class(False, "running")
        self.add_class("error" if is_error else "ok")
        self._header.update(self._header_text())
        lines = content.count("\n") + 1
        long = lines > FOLD_LINES or len(content) > FOLD_CHARS
        title = f"result ({lines} lines, {len(content)} chars)" if long else "result"
        self.mount(Collapsible(Static(_plain(content), classes="tool-result"), title=title,
                               collapsed=long, classes="tool-result-box"))


class AssistantTurn(Vertical):
    """One model step: reasoning, text and tool calls, in the order they arrive."""

    def __init__(self) -> None:
        super().__init__(classes="assistant-turn")
        self.reasoning: ReasoningBlock | None = None
        self.markdown: Markdown | None = None
        self.stream: MarkdownStream | None = None
        self.text = ""

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
            self.markdown = Markdown(classes="assistant-text")
            await self.mount(self.markdown)
            self.stream = Markdown.get_stream(self.markdown)
        self.text += text
        assert self.stream is not None
        await self.stream.write(text)

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.stop()
            self.stream = None
        if self.reasoning is not None:
            self.reasoning.flush(live=False)


class TranscriptView(VerticalScroll):
    """A session's transcript, live or rebuilt from the store."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.turn: AssistantTurn | None = None
        self.panels: dict[str, ToolPanel] = {}

    def on_mount(self) -> None:
        # Follow the stream at the bottom until the person scrolls up to read; no scroll call
        # per delta (that was a layout pass for every three characters).
        self.anchor()

    async def clear(self) -> None:
        await self.close_turn()
        self.panels.clear()
        await self.remove_children()

    async def add(self, widget: Static | Vertical) -> None:
        await self.mount(widget)

    async def user(self, text: str) -> None:
        await self.close_turn()
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
        tool calls the store's journal records as errors."""
        await self.clear()
        blocks: list[tuple[Static | Vertical, list[Any]]] = []
        results: dict[str, str] = {}
        for msg in messages:
            role = msg.get("role")
            if role == "user":
                blocks.append((UserTurn(str(msg.get("content") or "")), []))
            elif role == "assistant":
                blocks.append((AssistantTurn(), self._stored_turn(msg)))
            elif role == "compaction":
                blocks.append((Notice("⇣ compacted: older turns were replaced by a summary"),
                               []))
            elif role == "tool":
                results[str(msg.get("tool_call_id", ""))] = str(msg.get("content") or "")
        await self.mount_all([block for block, _ in blocks])
        for block, children in blocks:
            if children:
                await block.mount_all(children)
        for call_id, content in results.items():
            panel = self.panels.get(call_id)
            if panel is not None:
                panel.finish(content, is_error=call_id in failed, seconds=None)
        self.scroll_end(animate=False)

    def _stored_turn(self, msg: dict[str, Any]) -> list[Any]:
        children: list[Any] = []
        if msg.get("reasoning_content"):
            children.append(ReasoningBlock(str(msg["reasoning_content"])))
        if str(msg.get("content") or "").strip():
            children.append(Markdown(str(msg["content"]), classes="assistant-text"))
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function", {})
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {"(unparsed)": fn.get("arguments")}
            panel = ToolPanel(str(tc.get("id", "")), str(fn.get("name", "?")),
                              args if isinstance(args, dict) else {"value": args})
            self.panels[panel.call_id] = panel
            children.append(panel)
        return children
