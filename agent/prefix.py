"""Prefix breaks that come from outside one run: a session re-rendered another way.

Within a run the transcript reports its own breaks. Across runs, a session continued in another
thinking mode or reasoning effort renders differently from its very first byte on (chat drops
reasoning, ``max`` adds a preamble), so the engine's cached prefix ends there. The session
remembers how it was last rendered, and a run that changes it gets one warning naming the
offset and both renderings.
"""

from __future__ import annotations

from typing import Any

from whalebone.agent.config import AgentConfig
from whalebone.agent.events import RunWarning
from whalebone.agent.store import Session
from whalebone.dsml.transcript import Transcript


def mode_change(session: Session, config: AgentConfig, history: list[dict[str, Any]],
                transcript: Transcript) -> RunWarning | None:
    """A warning if this run renders ``session`` unlike the last run did (rendering
    ``transcript`` to compare), else None; either way the new rendering is remembered."""
    stored = session.store.config(session.id)
    now = {"mode": config.mode, "effort": config.reasoning_effort}
    before = stored.get("rendered_as")
    if before != now:
        session.set_config({**stored, "rendered_as": now})
    if before is None or before == now:
        return None
    old = Transcript(before["mode"], drop_thinking=False, reasoning_effort=before["effort"])
    old.append(*history)
    old.render()
    transcript.render()
    at = shared_prefix(old.text, transcript.text)
    return RunWarning(kind="prefix_break", message=f"prompt rewritten from offset {at}: this run "
                   f"renders the session as {now['mode']} (effort {now['effort']}), the last "
                   f"one as {before['mode']} (effort {before['effort']}); the cache restarts "
                   "there")


def shared_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on slice equality: C-speed comparisons
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo
