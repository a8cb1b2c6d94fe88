"""Compaction: when a session nears the context window, replace its older turns by a summary.

The system prompt (with the tool list) and the task stay byte-identical, so their cached prefix
survives; the turns between the task and the most recent ``keep_recent`` assistant turns are
replaced by a summary the model writes; the recent turns stay verbatim. The summary call is made
on the session's own prompt plus a request appended at its end, so that call itself is served from
the prefix cache (the whole conversation was just cached by the previous turn).

The store stays append-only: a compaction is recorded as a marker message (role ``compaction``)
naming what was kept, and :func:`effective_history` replays markers to rebuild the conversation a
resumed run sees. Markers never reach the codec.

There is one compaction, :func:`compact`: the loop calls it as a prompt nears the context window
(:func:`near_limit`), and ``Agent.compact`` calls it on demand (:func:`on_demand`), so both write
the same marker, keep the same bytes and meter the summary call the same way (``kind=
"compaction"``, cleared by the budget guard first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from whalebone.agent.agent import AgentError
from whalebone.agent.events import AgentEvent, Compacted, RunWarning
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


class CompactionError(AgentError):
    """A compaction asked for on demand that did not happen; the session is as it was."""


class NothingToCompact(CompactionError):
    """Too few turns are old enough to compact (or the last turn's calls await results)."""


class CompactionFailed(CompactionError):
    """The summary call failed (an engine error) or wrote no usable summary."""


async def compact(run: Run, keep_recent: int) -> AsyncIterator[AgentEvent]:
    """Compact ``run``'s conversation in place: ask for the summary on the cached prompt,
    store the marker, and continue from head + summary + recent turns; the figures for the
    :class:`Compacted` report are left in ``run.pending_compaction``.

    The one implementation, for the loop near the context window (:func:`near_limit`) and for
    ``Agent.compact`` alike. Yields the summary call's :class:`UsageReport`; raises
    :class:`NothingToCompact` or :class:`CompactionFailed` with the conversation, the
    transcript and the store as they were (a budget refusal propagates as ``BudgetStop``).
    """
    conv = run.conversation
    cut = cut_point(conv.history, keep_recent)
    if cut is None:
        raise NothingToCompact(f"too few turns to compact: it needs more than {keep_recent} "
                               "assistant turns after the task, and there are "
                               f"{_turns(conv.history)}")
    hit_before = _hit_rate_before(run)
    before = conv.ask(SUMMARY_REQUEST)
    gen = Generation()
    parser = CompletionParser(run.cfg.mode)
    failure = ""
    try:
        async for delta in run.call_model("compaction", run.cfg.summary_max_tokens, gen):
            parser.feed(delta)
    except EngineError as e:
        failure = f"no summary: {e}"
    except BaseException:  # cancelled or refused by the budget: the conversation stays whole
        conv.restore(before)
        raise
    if not failure:
        parser.close()
        yield run.record_usage("compaction", gen)
        if not parser.result.content.strip() or gen.finish_reason != "stop":
            failure = "the model wrote no usable summary"
    if failure:
        conv.restore(before)
        raise CompactionFailed(failure)
    head = head_length(before)
    new, summary_msg = compacted(before, cut, neutralise(parser.result.content.strip()))
    seqs = [*conv.seqs[:head], run.session.next_seq, *conv.seqs[cut:]]
    kept = conv.replace(marker(head, conv.seqs[cut], summary_msg), new, seqs)
    run.compacted({
        "messages_before": len(before), "messages_after": len(new),
        "tokens_before": gen.prompt_tokens, "hit_rate_before": hit_before,
        "summary_hit_rate": gen.cache_hit_tokens / gen.prompt_tokens if gen.prompt_tokens
        else 0.0, "kept_prefix_chars": kept})


async def near_limit(run: Run) -> AsyncIterator[AgentEvent]:
    """The loop's compaction as a prompt nears the context window: :func:`compact`, with
    a refusal or a failure turned into a warning (the run goes on with what it has)."""
    try:
        async for event in compact(run, run.cfg.keep_recent):
            yield event
    except NothingToCompact:
        yield RunWarning(kind="context_full", message="the prompt is near the context window "
                      "but too few turns are old enough to compact")
    except CompactionFailed as e:
        yield RunWarning(kind="compaction_failed", message=str(e))


async def on_demand(run: Run, keep_recent: int) -> Compacted:
    """Compact a stored session between runs (``Agent.compact``): take up its conversation,
    then :func:`compact` it. ``run`` holds the session open, so no run writes it meanwhile."""
    conv = run.conversation
    conv.load()
    answered = {m.get("tool_call_id") for m in conv.history if m.get("role") == "tool"}
    last = next((m for m in reversed(conv.history) if m.get("role") == "assistant"), None)
    if last is not None and any(tc["id"] not in answered for tc in last.get("tool_calls") or ()):
        # The loop closes such calls when it resumes (and may re-run one); compacting must
        # neither run tools nor ask for a summary of a turn that has not finished.
        raise NothingToCompact(f"session {run.session.id} was interrupted with tool calls "
                               "awaiting results: resume it before compacting")
    conv.measure()
    async with aclosing(compact(run, keep_recent)) as events:
        async for _ in events:
            pass  # the summary call's usage is in the store (and the budget ledger) already
    stats = run.take_compaction()
    assert stats is not None  # compact() either raised or left its figures
    return Compacted(**stats, tokens_after=conv.estimate)


def _turns(history: list[dict[str, Any]]) -> int:
    head = head_length(history)
    return sum(1 for m in history[head:] if m.get("role") == "assistant")


def _hit_rate_before(run: Run) -> float:
    """The cache hit rate of the last turn before the compaction: this run's, or (for a
    compaction between runs) the last one the store recorded."""
    last = run.conversation.last
    if last is not None:
        return last.cache_hit_tokens / last.prompt_tokens if last.prompt_tokens else 0.0
    turns = [u for u in run.session.store.usage(run.session.id) if u.kind != "compaction"]
    if not turns or not turns[-1].prompt_tokens:
        return 0.0
    return turns[-1].cache_hit_tokens / turns[-1].prompt_tokens
