"""Compaction: when a session nears the context window, replace its older turns by a summary.

The system prompt (with the tool list) and the task stay byte-identical, so their cached prefix
survives; the turns between the task and the most recent ``keep_recent`` assistant turns are
replaced by a summary the model writes; the recent turns stay verbatim. The summary call is made
on the session's own prompt plus a request appended at its end, so that call itself is served from
the prefix cache (the whole conversation was just cached by the previous turn).

The store stays append-only: a compaction is recorded as a marker message (role ``compaction``)
naming what was kept, and :func:`effective_history` replays markers to rebuild the conversation a
resumed run sees. Markers never reach the codec.
"""

from __future__ import annotations

from typing import Any

SUMMARY_REQUEST = (
    "[whalebone] The conversation is near the context limit and older turns will be replaced "
    "by your summary. Write the summary now, as plain text with no tool calls: the task, what "
    "has been done and found (files, commands, results, decisions), what failed, and what "
    "remains to do. Be specific and complete; the original turns will be gone."
)
SUMMARY_HEADER = "[whalebone] Summary of earlier turns (written by you before a compaction):\n\n"


def effective_history(raw: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The conversation a run continues from, as (stored index, message) pairs: the stored
    messages with every compaction marker applied (a summary carries its marker's index)."""
    view: list[tuple[int, dict[str, Any]]] = []  # (stored index, message)
    for i, msg in enumerate(raw):
        if msg.get("role") != "compaction":
            view.append((i, msg))
            continue
        head, keep_from = int(msg["head"]), int(msg["keep_from"])
        view = view[:head] + [(i, msg["summary"])] + [(j, m) for j, m in view[head:]
                                                       if j >= keep_from]
    return view


def head_length(history: list[dict[str, Any]]) -> int:
    """Leading messages a compaction keeps: the system prompt and the task that follows it."""
    n = 1 if history and history[0].get("role") == "system" else 0
    while n < len(history) and history[n].get("role") == "user":
        n += 1
    return n


def cut_point(history: list[dict[str, Any]], keep_recent: int) -> int | None:
    """Index of the first message kept verbatim (an assistant turn), or None when there is
    too little history to compact."""
    head = head_length(history)
    turns = [i for i in range(head, len(history)) if history[i].get("role") == "assistant"]
    if len(turns) <= keep_recent:
        return None
    cut = turns[-keep_recent]
    return cut if cut > head + 1 else None


def compacted(history: list[dict[str, Any]], cut: int, summary: str
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The compacted conversation (head, summary, ``history[cut:]``) and its summary message."""
    head = head_length(history)
    summary_msg = {"role": "user", "content": SUMMARY_HEADER + summary}
    return [*history[:head], summary_msg, *history[cut:]], summary_msg


def marker(head: int, keep_from: int, summary_msg: dict[str, Any]) -> dict[str, Any]:
    """The stored record of a compaction. ``keep_from`` is a stored message index."""
    return {"role": "compaction", "head": head, "keep_from": keep_from, "summary": summary_msg}
