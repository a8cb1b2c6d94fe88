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

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from whalebone.agent.events import AgentEvent, Warning
from whalebone.agent.generate import Generation
from whalebone.dsml.parser import CompletionParser
from whalebone.dsml.untrusted import neutralise
from whalebone.engine.base import EngineError

if TYPE_CHECKING:
    from whalebone.agent.loop import Run

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


async def compact(run: Run) -> AsyncIterator[AgentEvent]:
    """Compact ``run``'s conversation in place: ask for the summary on the cached prompt,
    store the marker, and reset the transcript to head + summary + recent turns. On any failure
    the conversation is left as it was, with a warning."""
    cut = cut_point(run.history, run.cfg.keep_recent)
    if cut is None:
        yield Warning(kind="context_full", message="the prompt is near the context window "
                      "but too few turns are old enough to compact")
        return
    before = list(run.history)
    last = run.last
    hit_before = last.cache_hit_tokens / last.prompt_tokens if last and last.prompt_tokens \
        else 0.0
    run.transcript.append({"role": "user", "content": SUMMARY_REQUEST})
    run.transcript.render()  # merges into the unsent last turn: nothing cached is lost
    gen = Generation()
    parser = CompletionParser(run.cfg.mode)
    failure = ""
    try:
        async for delta in run._generate("compaction", run.cfg.summary_max_tokens, gen):
            parser.feed(delta)
    except EngineError as e:
        failure = f"no summary: {e}"
    if not failure:
        parser.close()
        yield run._usage("compaction", gen)
        if not parser.result.content.strip() or gen.finish_reason != "stop":
            failure = "the model wrote no usable summary"
    if failure:
        run.transcript.reset(before)
        run.transcript.render()
        yield Warning(kind="compaction_failed", message=failure)
        return
    head = head_length(before)
    new, summary_msg = compacted(before, cut, neutralise(parser.result.content.strip()))
    marker_seq = run.session.next_seq
    run.session.append(marker(head, run.seqs[cut], summary_msg))
    run.history = new
    run.seqs = [*run.seqs[:head], marker_seq, *run.seqs[cut:]]
    render = run.transcript.reset(new)
    kept = render.prefix_break.offset if render.prefix_break else len(run.transcript.text)
    run.estimate = run._count(run.transcript.text)
    run.last = None  # the next turn's cache covers only the kept head
    run.loops.reset()
    run.pending_compaction = {
        "messages_before": len(before), "messages_after": len(new),
        "tokens_before": gen.prompt_tokens, "hit_rate_before": hit_before,
        "summary_hit_rate": gen.cache_hit_tokens / gen.prompt_tokens if gen.prompt_tokens
        else 0.0, "kept_prefix_chars": kept}
