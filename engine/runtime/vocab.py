"""The id table between V4's tokenizer and a checkpoint with a smaller vocabulary.

Prompts are always tokenized by the real V4 tokenizer (129,280 ids). A small checkpoint (the
bundled nano) cannot afford an embedding row for each of them, so it keeps only the ids it was
trained on: every special token (so BOS, EOS, ``</think>``, the DSML markers … stay single ids
and keep their meaning) plus the most frequent ordinary tokens of a corpus of rendered prompts.

The table is stored beside the weights as ``vocab.json``::

    {"format": "whalebone-vocab/1", "v4_vocab_size": 129280, "unk_id": 1283,
     "model_to_v4": [0, 1, 2, 128000, …, -1, 13, 271, …]}

``model_to_v4[m]`` is the V4 id that model id ``m`` stands for; the one entry ``-1`` is the model's
``<unk>``. Every V4 id not in the table maps to ``<unk>`` on the way in. On the way out ``<unk>``
has no V4 id, so the engine never samples it (its logit is masked). A checkpoint without
``vocab.json`` whose vocabulary is V4's size uses the identity table.

Model ids are laid out as: special tokens in V4 id order (so BOS = 0 and EOS = 1 as in V4), then
``<unk>``, then ordinary tokens from most to least frequent (ties by V4 id, so a build is
deterministic).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from whalebone.engine.base import EngineError

if TYPE_CHECKING:
    import torch

FORMAT = "whalebone-vocab/1"
FILENAME = "vocab.json"
V4_VOCAB_SIZE = 129_280


class VocabError(EngineError):
    """A vocabulary table that cannot be used (malformed file, ids out of range, too small)."""


class VocabMap:
    """A bijection between a subset of V4 ids and the model ids ``0 … size-1`` (plus ``<unk>``)."""

    def __init__(self, model_to_v4: Sequence[int], *, v4_vocab_size: int = V4_VOCAB_SIZE) -> None:
        table = [int(i) for i in model_to_v4]
        unk = [m for m, v in enumerate(table) if v == -1]
        if len(unk) > 1:
            raise VocabError(f"a vocabulary has at most one <unk> entry, found {len(unk)}")
        known = [v for v in table if v != -1]
        if any(v < 0 or v >= v4_vocab_size for v in known):
            raise VocabError(f"vocabulary entries must be V4 ids in [0, {v4_vocab_size}) or -1")
        if len(set(known)) != len(known):
            raise VocabError("a V4 id appears twice in the vocabulary table")
        if not unk and len(known) != v4_vocab_size:
            raise VocabError("a vocabulary smaller than V4's needs an <unk> entry (-1)")
        self.model_to_v4: list[int] = table
        self.v4_vocab_size = v4_vocab_size
        self.unk_id: int | None = unk[0] if unk else None
        fallback = -1 if self.unk_id is None else self.unk_id
        self._v4_to_model = [fallback] * v4_vocab_size
        for m, v in enumerate(table):
            if v != -1:
                self._v4_to_model[v] = m
        self._in_table: torch.Tensor | None = None  # built lazily: torch is optional here

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def identity(cls, size: int = V4_VOCAB_SIZE) -> VocabMap:
        """The table of a checkpoint with V4's own vocabulary."""
        return cls(range(size), v4_vocab_size=size)

    @classmethod
    def build(cls, corpus: Iterable[Sequence[int]], size: int, special_ids: Iterable[int],
              *, v4_vocab_size: int = V4_VOCAB_SIZE) -> VocabMap:
        """Keep every special id, ``<unk>``, and the ``size - len(specials) - 1`` most frequent
        other ids of ``corpus`` (token-id sequences of rendered prompts)."""
        specials = sorted(set(special_ids))
        room = size - len(specials) - 1
        if room < 0:
            raise VocabError(f"a vocabulary of {size} cannot hold {len(specials)} special tokens "
                             "and <unk>")
        counts: Counter[int] = Counter()
        for seq in corpus:
            counts.update(seq)
        special_set = set(specials)
        ordinary = sorted((v for v in counts if v not in special_set),
                          key=lambda v: (-counts[v], v))[:room]
        return cls([*specials, -1, *ordinary], v4_vocab_size=v4_vocab_size)

    @classmethod
    def build_from_texts(cls, texts: Iterable[str], size: int) -> VocabMap:
        """:meth:`build` over rendered prompts, tokenized by the real V4 tokenizer."""
        from whalebone.dsml.tokenizer import load_tokenizer

        tok = load_tokenizer()
        return cls.build((tok.encode(t) for t in texts), size, tok.special_ids,
                         v4_vocab_size=tok.vocab_size)

    @classmethod
    def for_size(cls, size: int) -> VocabMap:
        """A table for an untrained model of ``size`` ids (random weights for tests and
        benchmarks): identity at V4's size; else every special token that fits (the prompt
        format's own markers first), ``<unk>``, then the lowest ordinary V4 ids."""
        from whalebone.dsml import tokens as T
        from whalebone.dsml.tokenizer import load_tokenizer

        tok = load_tokenizer()
        if size >= tok.vocab_size:
            return cls.identity(tok.vocab_size)
        marks = [T.BOS, T.EOS, T.USER, T.ASSISTANT, T.LATEST_REMINDER, T.THINK_START,
                 T.THINK_END, T.DSML, *T.TASK_TOKENS.values()]
        first = [tok.special_tokens[m] for m in marks if m in tok.special_tokens]
        if len(first) + 1 > size:
            raise VocabError(f"a vocabulary of {size} cannot hold the prompt format's "
                             f"{len(first)} special tokens and <unk>")
        # All specials only when they leave at least half the table to ordinary text.
        rest = sorted(tok.special_ids - set(first))
        specials = [*first, *rest] if len(first) + len(rest) + 1 <= size // 2 else first
        ordinary = [v for v in range(tok.vocab_size) if v not in tok.special_ids][
            : size - 1 - len(specials)]
        return cls([*sorted(specials), -1, *ordinary], v4_vocab_size=tok.vocab_size)

    # -- mapping ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Rows the model's embedding and head need."""
        return len(self.model_to_v4)

    @property
    def is_identity(self) -> bool:
        return self.unk_id is None

    def to_model(self, v4_ids: Sequence[int]) -> list[int]:
        """V4 ids to model ids; ids outside the table become ``<unk>``."""
        table = self._v4_to_model
        try:
            return [table[i] if i >= 0 else _bad_id(i) for i in v4_ids]
        except IndexError:
            bad = next(i for i in v4_ids if i >= self.v4_vocab_size)
            raise VocabError(f"token id {bad} is outside V4's vocabulary "
                             f"of {self.v4_vocab_size}") from None

    def to_v4(self, model_ids: Sequence[int]) -> list[int]:
        """Model ids to V4 ids. ``<unk>`` has no V4 id: the engine masks it, so it never gets
        here; asking is an error rather than a silent substitution."""
        out = []
        for m in model_ids:
            v = self.model_to_v4[m] if 0 <= m < len(self.model_to_v4) else -2
            if v < 0:
                raise VocabError(f"model id {m} has no V4 token"
                                 + (" (it is <unk>)" if v == -1 else ""))
            out.append(v)
        return out

    def sampleable_mask(self) -> torch.Tensor | None:
        """A bool tensor over model ids, False where an id must never be sampled (``<unk>``);
        None when every id may be sampled."""
        if self.unk_id is None:
            return None
        if self._in_table is None:
            import torch

            mask = torch.ones(self.size, dtype=torch.bool)
            mask[self.unk_id] = False
            self._in_table = mask
        return self._in_table

    def coverage(self, v4_ids: Sequence[int]) -> float:
        """Share of ``v4_ids`` the table keeps (1.0 = nothing becomes ``<unk>``)."""
        if not v4_ids:
            return 1.0
        unk = self.unk_id
        return sum(1 for i in self.to_model(v4_ids) if i != unk) / len(v4_ids)

    # -- files --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "v4_vocab_size": self.v4_vocab_size, "unk_id": self.unk_id,
                "model_to_v4": self.model_to_v4}

    def save(self, folder: str | Path) -> Path:
        """Write ``vocab.json`` into a checkpoint folder (atomically: temp file + rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FILENAME
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".vocab-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, separators=(",", ":"))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> VocabMap | None:
        """The table stored in a checkpoint folder, or None when it has none."""
        path = Path(folder) / FILENAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise VocabError(f"{path}: not a readable vocabulary table ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise VocabError(f"{path}: not a {FORMAT} table")
        table = data.get("model_to_v4")
        if not isinstance(table, list) or not all(isinstance(i, int) for i in table):
            raise VocabError(f"{path}: model_to_v4 must be a list of integers")
        vmap = cls(table, v4_vocab_size=int(data.get("v4_vocab_size", V4_VOCAB_SIZE)))
        if data.get("unk_id") != vmap.unk_id:
            raise VocabError(f"{path}: unk_id {data.get('unk_id')} does not match the table")
        return vmap

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, VocabMap) and self.model_to_v4 == other.model_to_v4
                and self.v4_vocab_size == other.v4_vocab_size)

    def __hash__(self) -> int:
        return hash((tuple(self.model_to_v4), self.v4_vocab_size))

    def __repr__(self) -> str:
        return f"VocabMap(size={self.size}, unk_id={self.unk_id})"


def _bad_id(i: int) -> int:
    raise VocabError(f"token id {i} is negative")
