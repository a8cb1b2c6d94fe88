"""``whalebone chat``: the app. It composes the widgets and routes messages between them and the
:class:`~whalebone.tui.runner.ChatRunner`; what the widgets show is theirs, what a turn does is
the runner's.

Keys: Enter sends, Ctrl+J new line, Ctrl+C cancels the running step (the session and everything
committed stay), Ctrl+N new session, Ctrl+B shows and focuses the session list (again: hides
it), Ctrl+P the command palette, Ctrl+T light/dark, Ctrl+Q quits (asking first if a message is
typed). In the session list: Enter opens, n new, r rename, d delete. Slash commands typed in the
input (``/help`` lists them) are :mod:`whalebone.tui.slash`'s.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static
from textual.worker import Worker

from whalebone.agent import events as ev
from whalebone.core.errors import WhaleboneError
from whalebone.tui.asking import Approvals
from whalebone.tui.commands import ChatCommands
from whalebone.tui.figures import StatusFigures
from whalebone.tui.modals import ConfirmQuestion, TextQuestion
from whalebone.tui.prompt import PromptInput
from whalebone.tui.runner import ChatRunner
from whalebone.tui.sessions import LEGEND, SessionList, job_sessions
from whalebone.tui.slash import SlashCommands, session_label
from whalebone.tui.status import StatusBar
from whalebone.tui.transcript import LAZY_TURNS, TranscriptView

THEMES = {"dark": "textual-dark", "light": "textual-light"}


class ChatApp(Approvals):
    CSS_PATH = "chat.tcss"
    TITLE = "whalebone"
    COMMANDS: ClassVar[set[Any]] = {ChatCommands}  # Textual's own come after ours, from it
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "cancel", "Cancel step", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+n", "new_session", "New"),
        Binding("ctrl+b", "toggle_sessions", "Sessions"),
        Binding("ctrl+t", "toggle_dark", "Theme"),
        Binding("escape", "focus_prompt", "Prompt", show=False),
    ]

    def __init__(self, runner: ChatRunner, *, session_id: str | None = None,
                 theme: str = "dark", history_file: Path | None = None) -> None:
        super().__init__()
        self.runner = runner
        self.history_file = history_file
        self.initial_session = session_id
        self.theme = THEMES.get(theme, theme)
        engine = runner.engine
        self.figures = StatusFigures(engine=getattr(engine, "name", "engine"),
                                     model=getattr(engine, "model", "?"),
                                     window=getattr(engine, "context_window", 0),
                                     thinking=runner.config.thinking,
                                     memory=runner.memory_scope)
        self.worker: Worker[None] | None = None
        self.budget_poll_s = 1.0  # how often the ledger is asked for requests awaiting a person
        self._asked: set[str] = set()  # extension requests already put to the person
        self._asking_budget = False
        self.slash = SlashCommands(self)
        self.keep_turns = 3 * LAZY_TURNS  # turns kept built in a live session
        self._decided_elsewhere: set[str] = set()  # requests the auditor or another front end
        # decided while their modal was up

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield SessionList(id="sessions")
                yield Static(LEGEND, id="legend", markup=False)
            with Vertical(id="chat"):
                yield TranscriptView(id="transcript")
                yield PromptInput(self.history_file, id="prompt")
        yield StatusBar(self.figures, id="status")
        yield Footer()

    @property
    def transcript(self) -> TranscriptView:
        return self.query_one(TranscriptView)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    async def on_mount(self) -> None:
        self.runner.ask_person = self.ask_shell
        self.set_interval(5.0, self.refresh_scopes)  # other processes spend from the ledger
        if self.runner.ledger is not None:
            self.set_interval(self.budget_poll_s, self.check_extensions)
        self.refresh_scopes()
        if self.initial_session is not None:
            await self.open_session(self.initial_session)
        else:
            await self.refresh_sessions()
            await self.welcome()
        self.prompt.focus()

    async def welcome(self) -> None:
        """What an empty session starts from: engine, workspace, budget, memory, keys."""
        runner, figures = self.runner, self.figures
        budget = " · ".join(s.text() for s in figures.scopes) or "no budget ledger caps this chat"
        await self.transcript.welcome([
            ("engine", f"{runner.engine_spec} · model {figures.model} · thinking "
                       f"{figures.thinking}"),
            ("workspace", str(runner.workspace.expanduser().resolve())),
            ("budget", budget),
            ("memory", runner.memory_scope or "none (/memory KIND:NAME attaches a scope)"),
            ("keys", "Enter sends · Ctrl+P commands and sessions · /help commands and keys"),
        ])

    async def on_unmount(self) -> None:
        # The engine may hold a model, connections or a cache file: release it on the way out.
        await self.runner.engine.aclose()

    # --- sessions --------------------------------------------------------------------------

    async def refresh_sessions(self) -> None:
        await self.query_one(SessionList).show(self.runner.store.list(), self.runner.session_id,
                                               job_sessions(self.runner.jobs_db))

    async def open_session(self, session_id: str) -> None:
        store = self.runner.store
        try:
            store.info(session_id)
        except WhaleboneError as e:
            self.notify(str(e), severity="error")
            return
        self.runner.session_id = session_id
        failed = {e.call_id for e in store.journal(session_id) if e.is_error}
        await self.transcript.load(store.messages(session_id), failed)
        usage = store.usage(session_id)
        self.figures.reset_session(usage)
        # The engine the session last ran on, if not the one its next turn runs on.
        last = next((r.engine for r in reversed(usage) if r.engine), "")
        self.figures.session_engine = "" if last in (self.figures.engine,
                                                      self.runner.engine_spec) else last
        self.figures.state = "idle"
        self.status.show()
        await self.refresh_sessions()

    async def on_session_list_chosen(self, message: SessionList.Chosen) -> None:
        await self.switch_to(message.session_id)

    async def switch_to(self, session_id: str) -> None:
        if self.running:
            self.notify("A step is running: Ctrl+C cancels it first.", severity="warning")
            return
        await self.open_session(session_id)
        self.prompt.focus()

    def action_switch_session(self) -> None:
        """The palette narrowed to sessions: fuzzy search over titles, Enter opens one."""
        from textual.command import SimpleCommand

        commands = [SimpleCommand(session_label(info), partial(self.switch_to, info.id),
                                  f"session {info.id}")
                    for info in self.runner.store.list() if info.id != self.runner.session_id]
        if not commands:
            self.notify("No other session to switch to.")
            return
        self.search_commands(commands, placeholder="Switch to session… (type to search)")

    async def action_new_session(self) -> None:
        if self.running:
            self.notify("A step is running: Ctrl+C cancels it first.", severity="warning")
            return
        self.runner.session_id = None  # created with the first message, titled by it
        await self.transcript.clear()
        self.figures.reset_session([])
        self.figures.session_engine = ""
        self.status.show()
        await self.refresh_sessions()
        await self.welcome()
        self.prompt.focus()

    def on_session_list_new_requested(self, _: SessionList.NewRequested) -> None:
        self.run_worker(self.action_new_session())

    def on_session_list_rename_requested(self, message: SessionList.RenameRequested) -> None:
        self.ask_rename(message.session_id)

    def on_session_list_delete_requested(self, message: SessionList.DeleteRequested) -> None:
        self.ask_delete(message.session_id)

    def action_rename_session(self) -> None:
        if self.runner.session_id is not None:
            self.ask_rename(self.runner.session_id)

    def action_delete_session(self) -> None:
        if self.runner.session_id is not None:
            self.ask_delete(self.runner.session_id)

    def ask_rename(self, session_id: str) -> None:
        current = self.runner.store.info(session_id).title

        async def rename(title: str | None) -> None:
            if title:
                self.runner.store.rename(session_id, title)
                await self.refresh_sessions()

        self.push_screen(TextQuestion("New title for the session:", current), rename)

    def ask_delete(self, session_id: str) -> None:
        title = self.runner.store.info(session_id).title or session_id

        async def delete(sure: bool | None) -> None:
            if not sure:
                return
            try:
                self.runner.store.delete(session_id)
            except WhaleboneError as e:  # a live run elsewhere holds it
                self.notify(str(e), severity="error")
                return
            if session_id == self.runner.session_id:
                await self.action_new_session()
            await self.refresh_sessions()

        self.push_screen(ConfirmQuestion(f"Delete the session {title!r}? This cannot be "
                                         "undone."), delete)

    # --- a turn ----------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        text = message.text
        if await self.slash.run(text):  # a command for the chat, not a message for the model
            return
        if text.startswith("//"):
            text = text[1:]
        if self.running:
            self.prompt.load_text(message.text)  # keep it; nothing is lost
            self.notify("A step is running: wait, or Ctrl+C to cancel it.", severity="warning")
            return
        await self.transcript.user(text)
        self.worker = self.run_worker(self.run_turn(text), group="agent",
                                      exit_on_error=False)

    async def run_turn(self, text: str) -> None:
        self.figures.state = "running"
        self.status.show()
        listed = self.runner.session_id
        try:
            async with aclosing(self.runner.turn(text)) as events:
                async for event in events:
                    if listed != self.runner.session_id:  # a new session was just created
                        listed = self.runner.session_id
                        await self.refresh_sessions()
                    await self.show_event(event)
        except asyncio.CancelledError:
            self.figures.state = "cancelled"
            await self.transcript.interrupted("■ cancelled: the session is kept; send a "
                                              "message to go on")
        except WhaleboneError as e:
            self.figures.state = "error"
            await self.transcript.interrupted(f"✖ {type(e).__name__}: {e}", "error")
        finally:
            self.status.show()
            await self.refresh_sessions()
        await self.trim_transcript()

    async def trim_transcript(self) -> None:
        """After a finished turn, a transcript past ``keep_turns`` turns is rebuilt from the
        store: the last few built, the rest behind the "earlier turns" line. Textual lays out
        every mounted widget on each layout change, so without this a long session would make
        every delta of the next answer slower."""
        sid = self.runner.session_id
        if self.figures.state == "idle" and sid and self.transcript.shown_turns > self.keep_turns:
            await self.open_session(sid)

    async def show_event(self, event: Any) -> None:
        figures = self.figures
        if isinstance(event, ev.StepStarted):
            figures.step_started(time.monotonic())
        elif isinstance(event, ev.UsageReport):
            figures.usage(event, time.monotonic())
            self.refresh_scopes()
        elif isinstance(event, ev.Done):
            figures.state = "idle" if event.reason == "answer" else event.reason
        await self.transcript.feed(event)
        self.status.show()

    def action_cancel(self) -> None:
        if self.running and self.worker is not None:
            self.worker.cancel()
        else:
            self.notify("Nothing is running. Ctrl+Q quits.")

    # --- palette actions -------------------------------------------------------------------

    async def action_switch_engine(self, spec: str) -> None:
        if self.running:
            self.notify("Switch engines between steps (Ctrl+C cancels this one).")
            return
        try:
            await self.runner.switch_engine(spec)
        except WhaleboneError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        engine = self.runner.engine
        self.figures.engine, self.figures.model = engine.name, engine.model
        self.figures.window = engine.context_window
        self.status.show()
        self.notify(f"Engine: {spec}")

    def action_thinking(self, mode: str) -> None:
        self.runner.set_thinking(mode)
        self.figures.thinking = mode
        self.status.show()

    def action_attach_memory(self) -> None:
        def attach(scope: str | None) -> None:
            if scope:
                self.attach_memory(scope)

        self.push_screen(TextQuestion("Memory scope to attach:"), attach)

    def attach_memory(self, scope: str) -> None:
        try:
            self.runner.attach_memory(scope)
        except WhaleboneError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        self.figures.memory = scope
        self.status.show()
        self.notify(f"Memory scope {scope} attached: sessions started from now on get "
                    "the memory tool (a session's tool list is fixed when it starts).")

    async def action_help(self) -> None:
        await self.slash.run("/help")

    async def action_quit(self) -> None:
        """Quit; with a typed message not yet sent, ask first (it would be lost)."""
        if not self.prompt.text.strip():
            self.exit()
            return

        def answer(sure: bool | None) -> None:
            if sure:
                self.exit()

        self.push_screen(ConfirmQuestion("Quit? The message you typed has not been sent and "
                                         "will be lost."), answer)

    async def action_compact(self) -> None:
        if self.running or self.runner.session_id is None:
            self.notify("Compaction needs an idle session.", severity="warning")
            return
        # A worker, like a turn: the summary is a model call, Ctrl+C cancels it.
        self.worker = self.run_worker(self.compact_session(), group="agent",
                                      exit_on_error=False)

    async def compact_session(self) -> None:
        self.figures.state = "compacting"
        self.status.show()
        try:
            report = await self.runner.compact()
        except asyncio.CancelledError:
            self.figures.state = "idle"
            self.notify("Compaction cancelled: the session is as it was.")
            return
        except WhaleboneError as e:
            self.figures.state = "idle"
            self.notify(str(e), severity="error", timeout=8)
            return
        finally:
            self.status.show()
        assert self.runner.session_id is not None
        await self.open_session(self.runner.session_id)
        await self.transcript.feed(report)

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_toggle_sessions(self) -> None:
        """Show the session list and give it the keyboard; from the list, hide it again."""
        sessions, side = self.query_one(SessionList), self.query_one("#side")
        if side.display and sessions.has_focus:
            side.display = False
            self.prompt.focus()
        else:
            side.display = True
            sessions.focus()

    def action_focus_prompt(self) -> None:
        self.prompt.focus()

    def refresh_scopes(self) -> None:
        try:
            self.figures.set_scopes(self.runner.scope_states())
        except WhaleboneError as e:
            self.notify(f"budget ledger: {e}", severity="error")
        self.status.show()
