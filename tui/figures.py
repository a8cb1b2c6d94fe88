"""The figures the status bar shows, kept apart from the widget so that they are plain data.

Every figure comes from a record, never from a guess: session totals start from the usage rows
the session store holds and grow with each :class:`~whalebone.agent.events.UsageReport`; the
context in use is the last call's prompt plus completion (the next prompt extends it); budget
scopes are read back from the ledger, which other processes may be spending from too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from whalebone.agent.events import UsageReport
from whalebone.agent.store import UsageRecord

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def compact(n: float) -> str:
    """1234 -> '1.2k', 1048576 -> '1.0M'."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def gauge(fraction: float, width: int = 10) -> str:
    """A bar of ``width`` cells, filled to ``fraction`` (clamped to 0..1)."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f}%"


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


@dataclass
class ScopeFigure:
    """One budget scope as the ledger reports it."""

    scope: str
    spent_usd: float
    max_usd: float | None
    spent_tokens: int = 0
    max_tokens: int | None = None

    def text(self) -> str:
        head, _, last = self.scope.rpartition(":")
        # A per-day scope (``agent:coder:2026-11-23``) is shown as today's; the session's own
        # scope is the only session scope shown, so its id is left out.
        if head and _DAY.fullmatch(last):
            name = f"{head} today"
        elif head == "session":
            name = "session"
        else:
            name = self.scope
        if self.max_usd is not None:
            return f"{name} {money(self.spent_usd)}/{money(self.max_usd)}"
        if self.max_tokens is not None:
            return f"{name} {compact(self.spent_tokens)}/{compact(self.max_tokens)} tok"
        return f"{name} {money(self.spent_usd)}"


@dataclass
class StatusFigures:
    engine: str
    model: str
    window: int
    thinking: str = "thinking"
    memory: str | None = None  # the attached memory scope
    session_engine: str = ""  # the engine a resumed session last ran on, if another one
    state: str = "idle"
    context_used: int = 0
    last_hit_rate: float | None = None
    session_prompt: int = 0
    session_hits: int = 0
    session_spend: float = 0.0
    tokens_per_s: float | None = None
    scopes: list[ScopeFigure] = field(default_factory=list)
    _step_started: float | None = None

    @property
    def session_hit_rate(self) -> float | None:
        return self.session_hits / self.session_prompt if self.session_prompt else None

    def reset_session(self, records: Iterable[UsageRecord]) -> None:
        """Start over from a session's stored usage (on switching or resuming a session)."""
        self.session_prompt = self.session_hits = self.context_used = 0
        self.session_spend = 0.0
        self.last_hit_rate = self.tokens_per_s = None
        for r in records:
            self.session_prompt += r.prompt_tokens
            self.session_hits += r.cache_hit_tokens
            self.session_spend += r.price
            self.context_used = r.prompt_tokens + r.completion_tokens
            self.last_hit_rate = r.cache_hit_tokens / r.prompt_tokens if r.prompt_tokens else None

    def step_started(self, now: float) -> None:
        self._step_started = now

    def usage(self, event: UsageReport, now: float) -> None:
        self.session_prompt += event.prompt_tokens
        self.session_hits += event.cache_hit_tokens
        self.session_spend += event.price
        self.context_used = event.prompt_tokens + event.completion_tokens
        self.last_hit_rate = event.hit_rate if event.prompt_tokens else None
        seconds = getattr(event, "engine_seconds", 0.0)  # the engine's own time, if reported
        if not seconds and self._step_started is not None:
            seconds = now - self._step_started
        if seconds > 0:
            self.tokens_per_s = event.completion_tokens / seconds
        self._step_started = None

    def set_scopes(self, states: Iterable[Any]) -> None:
        """From the ledger's ``ScopeState`` records."""
        self.scopes = [ScopeFigure(s.scope, s.spent_usd + s.reserved_usd, s.max_usd,
                                   s.spent_tokens + s.reserved_tokens, s.max_tokens)
                       for s in states]

    def lines(self) -> tuple[str, str]:
        """The two lines of the status bar."""
        used = self.context_used / self.window if self.window else 0.0
        memory = f"  mem:{self.memory}" if self.memory else ""
        was = f" (session ran on {self.session_engine})" if self.session_engine else ""
        first = (f"{self.engine}·{self.model}{was}  {self.thinking}{memory}  [{self.state}]  "
                 f"ctx {gauge(used)} {compact(self.context_used)}/{compact(self.window)} "
                 f"{used * 100:.0f}%")
        tps = "— tok/s" if self.tokens_per_s is None else f"{self.tokens_per_s:.1f} tok/s"
        budgets = " · ".join(s.text() for s in self.scopes) or "no budget"
        second = (f"cache {percent(self.last_hit_rate)} (session "
                  f"{percent(self.session_hit_rate)}) │ {tps} │ spent "
                  f"{money(self.session_spend)} │ {budgets}")
        return first, second
