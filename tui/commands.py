"""The command palette (Ctrl+P): switch engine, thinking mode, theme; attach memory scopes;
compact; manage sessions. Each hit calls one of the app's actions, so the palette and the key
bindings can never disagree about what a command does."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from whalebone.tui.runner import THINKING_MODES


class ChatCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        runner = app.runner
        out: list[tuple[str, Callable[[], Any], str]] = []
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
            ("Session: new", app.action_new_session, "start an empty session"),
            ("Session: rename…", app.action_rename_session, "give this session a title"),
            ("Session: delete…", app.action_delete_session, "delete this session"),
            ("Theme: toggle light/dark", app.action_toggle_dark, "switch between themes"),
        ]
        return out

    async def discover(self) -> Hits:
        for name, run, help_text in self._commands():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, run, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
