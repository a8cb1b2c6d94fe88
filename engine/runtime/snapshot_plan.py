"""Where the bundled engine keeps snapshots: the prefixes a later request will re-send.

A prompt is snapshotted at its last 64-token boundary (DeepSeek's cache unit), at its end, and
at its stable end: just before the ``<think>`` that follows the last ``<｜Assistant｜>``, which
the next turn renders as ``</think>`` when thinking drops the previous reasoning. After a
completion, the engine asks whether the next turn will render ``</think>`` before its EOS
(:meth:`SnapshotPlan.closes_reasoning`) and where the re-rendered text will first be spelled
with other tokens than the model sampled (:meth:`SnapshotPlan.retokenized_from`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whalebone.dsml import tokens as T

if TYPE_CHECKING:
    from whalebone.dsml.tokenizer import V4Tokenizer

SNAPSHOT_ALIGN = 64  # prompt snapshots sit on multiples of this, DeepSeek's cache unit


class SnapshotPlan:
    """Snapshot points of V4 token ids, for one tokenizer."""

    def __init__(self, tokenizer: V4Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.assistant_id = tokenizer.token_id(T.ASSISTANT)
        self.think_id = tokenizer.token_id(T.THINK_START)
        self.think_end_id = tokenizer.token_id(T.THINK_END)

    def points(self, ids: list[int]) -> list[int]:
        """Prefix lengths of the prompt ``ids`` worth a snapshot, shortest first."""
        n = len(ids)
        points = {(n - 1) // SNAPSHOT_ALIGN * SNAPSHOT_ALIGN, n}
        stable = self.stable_end(ids)
        if stable is not None:
            points.add(stable)
        return sorted(p for p in points if p > 0)

    def stable_end(self, ids: list[int]) -> int | None:
        """The length before the ``<think>`` that follows the prompt's last
        ``<｜Assistant｜>``: the next turn renders it as ``</think>``. None when the prompt has
        no such marker (chat mode's ``</think>`` stays in later turns)."""
        try:
            at = len(ids) - 1 - ids[::-1].index(self.assistant_id)
        except ValueError:
            return None
        if at + 1 < len(ids) and ids[at + 1] == self.think_id:
            return at + 1
        return None

    def closes_reasoning(self, prompt: list[int], completion: list[int]) -> bool:
        """Whether the next turn renders ``</think>`` before this completion's final EOS: the
        model stopped while still reasoning (the prompt opened ``<think>``, the completion
        never closed it), so the state before the EOS is the one to keep."""
        return (completion[-1:] == [self.tokenizer.eos_id] and self.think_end_id not in
                completion and self.stable_end(prompt) is not None)

    def retokenized_from(self, completion: list[int]) -> int | None:
        """Where the next turn's rendering of ``completion`` will first differ from the ids
        sampled: the first id that differs from the canonical tokenization of the same text
        (a model may spell a word with other tokens than the tokenizer would). None when
        they agree; the final EOS is not compared."""
        body = completion[:-1] if completion[-1:] == [self.tokenizer.eos_id] else completion
        canonical = self.tokenizer.encode(self.tokenizer.decode(body))
        for i, (a, b) in enumerate(zip(body, canonical, strict=False)):
            if a != b:
                return i
        return None if len(body) == len(canonical) else min(len(body), len(canonical))


__all__ = ["SNAPSHOT_ALIGN", "SnapshotPlan"]
