"""Choosing the next token and knowing when to stop.

- :class:`Sampler`: greedy at temperature 0, else temperature + nucleus (top-p) sampling from a
  private, seeded ``torch.Generator``, so a seeded request is reproducible whatever else the
  process does with torch's global RNG.
- :class:`Detokenizer`: token ids to text deltas as they arrive. A byte-level BPE token can end
  in the middle of a UTF-8 character, so text is only released once it decodes cleanly.
- :class:`StopScanner`: finds stop strings in the streamed text and holds back any tail that
  could still become one, so a stream never shows half a stop string it later retracts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from whalebone.engine.base import EngineError, SamplingParams


class SamplingError(EngineError):
    """Logits no token can be drawn from (NaN, or nothing finite)."""


class Sampler:
    """Pick one id from a row of logits (shape ``(vocab,)``)."""

    def __init__(self, params: SamplingParams, *, mask: torch.Tensor | None = None) -> None:
        self.temperature = params.temperature
        self.top_p = params.top_p
        self.seed = params.seed
        self.generator = torch.Generator()
        if params.seed is None:
            self.generator.seed()  # fresh entropy: unseeded requests differ
        else:
            self.generator.manual_seed(params.seed)
        self.mask = mask  # False where an id must never be chosen (e.g. a vocab's <unk>)

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.detach().reshape(-1).float()
        if bool(torch.isnan(logits).any()):
            raise SamplingError("the model produced NaN logits (broken weights or state?)")
        if self.mask is not None:
            logits = logits.masked_fill(~self.mask[: logits.numel()], float("-inf"))
        if not bool(torch.isfinite(logits).any()):
            raise SamplingError("no token can be sampled: every logit is -inf or +inf")
        if self.temperature == 0.0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = nucleus(probs, self.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every id outside the smallest set of most likely ids whose mass reaches ``top_p``
    (the most likely id always stays), and renormalise."""
    sorted_p, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the ids ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return kept / kept.sum()


class Detokenizer:
    """Incremental ids -> text. Each :meth:`push` returns the text that became final.

    It decodes a short window (the last few tokens already released plus the new ones) rather
    than the whole completion, so each step costs O(1) whatever the length; the window's leading
    tokens give the BPE decoder the context it needs (leading spaces, merged bytes).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # ids before this are released as text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full = self._decode(self.ids[self._prefix:])
        if len(full) <= len(prefix_text) or full.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        delta = full[len(prefix_text):]
        self._prefix, self._read = self._read, len(self.ids)
        return delta

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return full[len(prefix_text):]


class StopScanner:
    """Feed text deltas; get back what may be shown and whether a stop string was completed.

    ``text`` is everything released so far, which never includes the stop string.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._keep = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.text = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        buf = self._pending + delta
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self._pending, self.stopped = buf[: min(hits)], "", True
        else:
            hold = self._held_tail(buf)
            out, self._pending = buf[: len(buf) - hold], buf[len(buf) - hold:]
        self.text += out
        return out

    def flush(self) -> str:
        """Release held text at the end of generation (no stop string can complete now)."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        self.text += out
        return out

    def _held_tail(self, buf: str) -> int:
        """Length of the longest tail of ``buf`` that is a proper prefix of some stop string."""
        for n in range(min(self._keep, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
