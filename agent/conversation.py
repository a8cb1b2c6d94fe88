"""The conversation of a run: its messages as rendered, where each one is stored, the transcript
that renders them, and what is known about the prompt's size.

A :class:`~whalebone.agent.loop.Run` drives the loop; this object owns the state the loop and a
compaction share, and changes it only through its methods, so the rules hold in one place:
the store is written first and the transcript second (the store is the truth); ``history[i]``
is stored at ``seqs[i]``; after a compaction the next turn's cache covers only the kept head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from whalebone.agent.compaction import effective_history
from whalebone.agent.config import AgentConfig
from whalebone.agent.generate import Generation
from whalebone.agent.store import Session
from whalebone.dsml.transcript import Transcript


class Conversation:
    """One run's view of a session's conversation."""

    def __init__(self, session: Session, config: AgentConfig,
                 count: Callable[[str], int]) -> None:
        self.session = session
        self.transcript = Transcript(config.mode, drop_thinking=False,
                                     reasoning_effort=config.reasoning_effort)
        self.history: list[dict[str, Any]] = []  # the conversation as rendered
        self.seqs: list[int] = []  # the stored index of each history message
        self.estimate = 0  # prompt tokens of the last render, estimated
        self.last: Generation | None = None  # the last turn's record (what the cache holds)
        self._count = count

    def load(self) -> None:
        """Take up the stored conversation, compaction markers applied (what a run, or a
        compaction on demand, continues from)."""
        for seq, msg in effective_history(self.session.messages()):
            self.history.append(msg)
            self.seqs.append(seq)
        if self.history:
            self.transcript.append(*self.history)

    def commit(self, *messages: dict[str, Any]) -> None:
        """Append messages: to the store first, then to the transcript."""
        first = self.session.next_seq
        self.session.append(*messages)
        self.transcript.append(*messages)
        self.history.extend(messages)
        self.seqs.extend(range(first, first + len(messages)))

    def measure(self) -> int:
        """Count the whole rendered prompt (after a reset, when no earlier turn can stand in)."""
        self.transcript.render()
        self.estimate = self._count(self.transcript.text)
        return self.estimate

    @property
    def cached_tokens(self) -> int:
        """Tokens of the prompt the last turn left in the engine's cache (its prompt and its
        completion), 0 before the first turn."""
        return 0 if self.last is None else self.last.prompt_tokens + self.last.completion_tokens

    # --- what a compaction does ---------------------------------------------------------------

    def ask(self, request: str) -> list[dict[str, Any]]:
        """Append ``request`` as a user turn to the transcript only (never stored), for a call
        made on the cached prompt; returns the conversation as it was, for :meth:`restore`."""
        before = list(self.history)
        self.transcript.append({"role": "user", "content": request})
        self.transcript.render()  # merges into the unsent last turn: nothing cached is lost
        return before

    def restore(self, before: list[dict[str, Any]]) -> None:
        """Undo :meth:`ask`: the transcript renders ``before`` again."""
        self.transcript.reset(before)
        self.transcript.render()

    def replace(self, marker: dict[str, Any], messages: list[dict[str, Any]],
                seqs: list[int]) -> int:
        """Store ``marker`` (a compaction record) and continue from ``messages``, stored at
        ``seqs`` (the marker's own index among them stands for the summary). Returns how many
        prompt characters stayed byte-identical."""
        self.session.append(marker)
        self.history, self.seqs = messages, seqs
        render = self.transcript.reset(messages)
        kept = render.prefix_break.offset if render.prefix_break else len(self.transcript.text)
        self.estimate = self._count(self.transcript.text)
        self.last = None  # the next turn's cache covers only the kept head
        return kept
