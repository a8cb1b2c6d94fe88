"""The command palette (Ctrl+P): our commands first (engine, thinking mode, memory, compaction,
sessions, switching to a session by fuzzy search), then Textual's own (theme picker, keys,
screenshot, quit) after them, without duplicates. Each hit calls one of the app's actions, so
the palette, the slash commands and the key bindings can never disagree about a command."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from whalebone.tui.runner import THINKING_MODES
from whalebone.tui.slash import session_label

SYSTEM_WEIGHT = 0.5  # Textual's commands rank below ours for the same match


class ChatCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        runner = app.runner
        out: list[tuple[str, Callable[[], Any], str]] = [
            ("Session: switch to…", app.action_switch_session,
             "find a session by its title (fuzzy) and open it"),
            ("Session: new", app.action_new_session, "start an empty session"),
        ]
        for spec in runner.engine_specs:
            if spec != runner.engine_spec:
                out.append((f"Engine: switch to {spec}", partial(app.action_switch_engine, spec),
                            "the next turn runs on this engine"))
        for mode in THINKING_MODES:
            if mode != runner.config.thinking:
                out.append((f"Thinking: {mode}", partial(app.action_thinking, mode),
                            "the model's reasoning mode for the next turn"))
        out.append(("Memory: attach a scope…", app.action_attach_memory,
                    "give sessions started from now on a memory scope"))
        if runner.can_compact:
            out.append(("Compact the session now", app.action_compact,
                        "summarise older turns to free context"))
        out += [
            ("Session: rename…", app.action_rename_session, "give this session a title"),
            ("Session: delete…", app.action_delete_session, "delete this session"),
            ("Help: commands and keys", app.action_help, "what /help shows"),
        ]
        return out

    def _system(self) -> list[tuple[str, Callable[[], Any], str]]:
        ours = {name.lower() for name, _, _ in self._commands()}
        return [(c.title, c.callback, c.help) for c in self.app.get_system_commands(self.screen)
                if c.title.lower() not in ours]

    def _sessions(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        return [(f"Switch to: {session_label(info)}", partial(app.switch_to, info.id),
                 f"session {info.id}") for info in app.runner.store.list()
                if info.id != app.runner.session_id]

    async def discover(self) -> Hits:
        for name, run, help_text in [*self._commands(), *self._system()]:
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        groups = ((self._commands(), 1.0), (self._sessions(), 0.9), (self._system(),
                                                                      SYSTEM_WEIGHT))
        for commands, weight in groups:
            for name, run, help_text in commands:
                score = matcher.match(name)
                if score > 0:
                    yield Hit(score * weight, matcher.highlight(name), run, help=help_text)
