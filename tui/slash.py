"""Slash commands typed in the input (``/help``, ``/new``, ``/model`` …): they act on the chat
and never reach the model. ``//text`` sends ``/text`` as a message. Each command calls one of
the app's actions (the palette calls the same ones), and what it reports goes into the
transcript as a notice, which is not part of the session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from whalebone.core.errors import WhaleboneError
from whalebone.tui.figures import compact, money
from whalebone.tui.runner import THINKING_MODES

KEYS = [
    ("Enter", "send the message"),
    ("Ctrl+J", "new line (also Shift+Enter, Alt+Enter)"),
    ("Up / Down", "walk what you sent before"),
    ("Ctrl+C", "cancel the running step (the session stays)"),
    ("Ctrl+P", "command palette: every command, and switching sessions"),
    ("Ctrl+N", "new session"),
    ("Ctrl+B", "session list: show and focus it (again: hide it)"),
    ("Ctrl+T", "light or dark theme"),
    ("Escape", "back to the input; in an approval: deny"),
    ("Ctrl+Y / Ctrl+L", "in a shell approval: approve once / allow always"),
    ("Ctrl+Q", "quit (asks first if a message is typed)"),
]

COMMANDS = [
    ("/help", "this list"),
    ("/new", "start a new session (the current one stays in the list)"),
    ("/clear", "the same as /new: an empty context, nothing deleted"),
    ("/sessions [TEXT]", "switch session (fuzzy search; with TEXT, the best match)"),
    ("/model [SPEC]", "show the engine, or switch to SPEC (also /engine)"),
    ("/thinking [MODE]", f"show or set the thinking mode ({', '.join(THINKING_MODES)})"),
    ("/compact", "summarise older turns to free context"),
    ("/cost", "spend, tokens and cache hits of this session, and budget scopes"),
    ("/budget SCOPE usd|tokens N", "set a limit (e.g. /budget session usd 2): overrides a "
     "denied extension; frozen runs anywhere go on"),
    ("/memory [SCOPE]", "show or attach a memory scope (kind:name, e.g. project:web)"),
    ("/permissions [revoke PATTERN]", "commands allowed without asking; revoke one"),
]


def help_text() -> str:
    width = max(len(c) for c, _ in COMMANDS)
    keys = max(len(k) for k, _ in KEYS)
    lines = ["Commands (type them in the input; //text sends /text to the model):"]
    lines += [f"  {c.ljust(width)}  {what}" for c, what in COMMANDS]
    lines += ["", "Keys:"]
    lines += [f"  {k.ljust(keys)}  {what}" for k, what in KEYS]
    return "\n".join(lines)


def fuzzy_score(query: str, text: str) -> int:
    """How well ``query`` matches ``text`` as a subsequence (0: not at all); consecutive and
    word-start letters count more, like the palette's matcher."""
    query, text = query.lower(), text.lower()
    if not query:
        return 1
    score, pos, last = 0, 0, -2
    for ch in query:
        found = text.find(ch, pos)
        if found < 0:
            return 0
        score += 3 if found == last + 1 else 1
        if found == 0 or not text[found - 1].isalnum():
            score += 2
        last, pos = found, found + 1
    return score


def session_label(info: Any) -> str:
    when = dt.datetime.fromtimestamp(info.updated).strftime("%Y-%m-%d %H:%M")
    return f"{info.title or '(untitled)'} · {when} · {info.messages} messages"


class SlashCommands:
    """Runs a typed ``/command`` against the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.table: dict[str, Callable[[str], Awaitable[None]]] = {
            "help": self.help, "new": self.new, "clear": self.new, "sessions": self.sessions,
            "model": self.model, "engine": self.model, "thinking": self.thinking,
            "compact": self.compact, "cost": self.cost, "budget": self.budget,
            "memory": self.memory,
            "permissions": self.permissions,
        }

    async def run(self, text: str) -> bool:
        """Run ``text`` if it is a command; False if it is a message for the model."""
        if not text.startswith("/") or text.startswith("//"):
            return False
        name, _, arg = text[1:].strip().partition(" ")
        command = self.table.get(name.lower())
        if command is None:
            await self.say(f"Unknown command /{name}: /help lists them (//{name} sends "
                           "it to the model).", "warning")
            return True
        try:
            await command(arg.strip())
        except WhaleboneError as e:
            await self.say(f"/{name}: {e}", "error")
        return True

    async def say(self, text: str, kind: str = "info") -> None:
        await self.app.transcript.notice(text, kind)
        self.app.transcript.scroll_end(animate=False)

    async def help(self, _: str) -> None:
        await self.say(help_text())

    async def new(self, _: str) -> None:
        await self.app.action_new_session()

    async def sessions(self, query: str) -> None:
        if not query:
            self.app.action_switch_session()
            return
        infos = self.app.runner.store.list()
        scored = sorted(((fuzzy_score(query, i.title or ""), i) for i in infos),
                        key=lambda pair: -pair[0])
        if not scored or scored[0][0] == 0:
            await self.say(f"No session matches {query!r}.", "warning")
            return
        await self.app.switch_to(scored[0][1].id)

    async def model(self, spec: str) -> None:
        runner = self.app.runner
        if spec:
            await self.app.action_switch_engine(spec)
            return
        others = [s for s in runner.engine_specs if s != runner.engine_spec]
        engine = runner.engine
        await self.say(f"Engine: {runner.engine_spec} (model {getattr(engine, 'model', '?')}, "
                       f"context {compact(getattr(engine, 'context_window', 0))} tokens)"
                       + (f"; also offered: {', '.join(others)}" if others else "")
                       + ". /model SPEC switches (e.g. bundled, openai:MODEL, scripted:FILE).")

    async def thinking(self, mode: str) -> None:
        if not mode:
            await self.say(f"Thinking mode: {self.app.runner.config.thinking} "
                           f"(one of {', '.join(THINKING_MODES)}).")
            return
        self.app.action_thinking(mode)
        await self.say(f"Thinking mode: {mode} from the next turn.")

    async def compact(self, _: str) -> None:
        await self.app.action_compact()

    async def cost(self, _: str) -> None:
        runner, figures = self.app.runner, self.app.figures
        lines = []
        if runner.session_id is None:
            lines.append("No session yet: nothing spent.")
        else:
            usage = runner.store.usage(runner.session_id)
            prompt = sum(r.prompt_tokens for r in usage)
            hits = sum(r.cache_hit_tokens for r in usage)
            out = sum(r.completion_tokens for r in usage)
            spent = sum(r.price for r in usage)
            rate = f"{hits / prompt:.0%}" if prompt else "—"
            lines.append(f"This session: {len(usage)} model calls, {money(spent)}; prompt "
                         f"{prompt:,} tokens ({hits:,} cache hits, {rate}), completion "
                         f"{out:,}.")
            kinds: dict[str, tuple[int, float]] = {}
            for r in usage:
                n, usd = kinds.get(r.kind, (0, 0.0))
                kinds[r.kind] = (n + 1, usd + r.price)
            if len(kinds) > 1:
                lines.append("  by kind: " + ", ".join(f"{k} {n}× {money(usd)}"
                                                      for k, (n, usd) in kinds.items()))
        self.app.refresh_scopes()
        if figures.scopes:
            lines.append("Budget (from the ledger, all processes): "
                         + " · ".join(s.text() for s in figures.scopes))
        else:
            lines.append("No budget ledger caps this chat (whalebone budget set … adds one).")
        await self.say("\n".join(lines))

    async def budget(self, arg: str) -> None:
        """A person's limit, as `whalebone budget set` writes it: ``session`` means this chat's
        session, and any other scope is taken as given."""
        parts = arg.split()
        if len(parts) != 3 or parts[1] not in ("usd", "tokens"):
            await self.cost("")
            await self.say("/budget SCOPE usd|tokens N sets a limit, e.g. /budget session usd 2 "
                           "(this session), /budget global tokens 100000.", "warning")
            return
        scope, unit, raw = parts
        runner = self.app.runner
        if scope == "session" and runner.session_id is not None:
            scope = f"session:{runner.session_id}"
        try:
            value = float(raw)
        except ValueError:
            raise WhaleboneError(f"{raw!r} is not a number") from None
        written, limit = runner.set_limit(scope, usd=value if unit == "usd" else None,
                                          tokens=int(value) if unit == "tokens" else None)
        self.app.refresh_scopes()
        await self.say(f"Limit for {written}: "
                       + ", ".join(x for x in (
                           f"${limit.max_usd:g}" if limit.max_usd is not None else "",
                           f"{limit.max_tokens:,} tokens" if limit.max_tokens is not None else "")
                           if x)
                       + ". A run frozen at it goes on from its next check.")

    async def memory(self, scope: str) -> None:
        if not scope:
            current = self.app.runner.memory_scope
            await self.say(f"Memory scope: {current}." if current else
                           "No memory scope is attached. /memory KIND:NAME attaches one "
                           "(e.g. /memory project:web) for sessions started from now on.")
            return
        self.app.attach_memory(scope)

    async def permissions(self, arg: str) -> None:
        runner = self.app.runner
        verb, _, pattern = arg.partition(" ")
        if verb in ("revoke", "rm", "remove"):
            pattern = pattern.strip()
            saved = runner.always_allowed()
            if pattern.isdigit() and 0 < int(pattern) <= len(saved):
                pattern = saved[int(pattern) - 1]
            if runner.revoke(pattern):
                await self.say(f"Revoked: commands matching {pattern!r} are asked about "
                               "again.")
            else:
                await self.say(f"No allow-always pattern {pattern!r} (/permissions lists "
                               "them).", "warning")
            return
        if arg:
            await self.say("Usage: /permissions, or /permissions revoke PATTERN|NUMBER.",
                           "warning")
            return
        saved = runner.always_allowed()
        lines = ["Shell commands that run without asking (chained commands are always "
                 "asked about):"]
        lines += [f"  {i}. {p}   (allow always; /permissions revoke {i})"
                  for i, p in enumerate(saved, 1)]
        lines += [f"  -  {p}   (from the config or --allow)" for p in runner.configured_allow]
        if len(lines) == 1:
            lines.append("  none: every command is asked about (Ctrl+L in an approval "
                         "allows one pattern always)")
        lines.append(f"Denied always: {', '.join(runner.shell_policy.deny) or 'nothing'}.")
        await self.say("\n".join(lines))
