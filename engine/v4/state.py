"""What one sequence carries between forward passes, and nothing more.

Per layer (V4 architecture, "the state a sequence carries"):

- ``window``: the ring of the last ``window_size`` KV vectors, slot = pos mod window_size;
- on compressed layers, the main compressor's ``entries`` (⌊pos/r⌋ × head_dim) and its pending
  rows: ``cur_kv``/``cur_score`` for the incomplete block (pos mod r rows of the projections,
  gate bias already added), plus on ratio-4 layers ``prev_kv``/``prev_score``, the first half of
  the previous complete block's rows, which the next entry pools (-inf scores before block 0);
- on ratio-4 layers the lightning indexer's compressor, the same fields at ``index_head_dim``
  (its ``entries`` are the indexer keys).

Hyper-connections and the MoE keep nothing. Saving exactly this at prefix length P restores the
sequence bit-exactly: :meth:`SeqState.to_tensors` gives a flat ``dict[str, Tensor]`` ready for
``safetensors.torch.save_file``; :meth:`SeqState.from_tensors` checks every shape against the
config before trusting it.

Speculative decoding feeds a few tokens and may keep only some of them:
:meth:`SeqState.mark` before that forward and :meth:`SeqState.rollback` after it give the state
that only ever saw the kept tokens, tensor for tensor, in O(tokens) work whatever the context
(a clone of a 32K state costs more than a decode step). The mark holds the ring rows the
forward will overwrite and the compressors' pending rows (the forward replaces those tensors,
it never writes into them); each compressor journals the rows it pooled, so that rows of a
kept token that went into a dropped entry can be put back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from whalebone.core.errors import WhaleboneError
from whalebone.engine.v4 import layers
from whalebone.engine.v4.config import ModelConfig


class StateError(WhaleboneError, ValueError):
    """A saved state that does not fit the model (missing tensor, wrong shape, wrong config)."""


class EntryBuffer:
    """An append-only (n, width) tensor with amortised O(1) appends (capacity doubles)."""

    def __init__(self, width: int, data: torch.Tensor | None = None) -> None:
        self.width = width
        self._data = torch.empty(0, width) if data is None else data.clone()
        self.n = self._data.size(0)

    def append(self, rows: torch.Tensor) -> None:
        need = self.n + rows.size(0)
        if need > self._data.size(0):
            grown = torch.empty(max(need, 2 * self._data.size(0), 16), self.width)
            grown[: self.n] = self._data[: self.n]
            self._data = grown
        self._data[self.n : need] = rows
        self.n = need

    def view(self) -> torch.Tensor:
        return self._data[: self.n]

    def clone(self) -> EntryBuffer:
        return EntryBuffer(self.width, self.view())


@dataclass
class CompressorMark:
    """A compressor's fields before a marked forward (references: the forward replaces them),
    and the rows that forward saw: the old pending rows followed by the new tokens' rows."""

    n_entries: int
    cur_kv: torch.Tensor
    cur_score: torch.Tensor
    prev_kv: torch.Tensor | None
    prev_score: torch.Tensor | None
    rows_kv: torch.Tensor | None = None  # set by the forward (Compressor.journal)
    rows_score: torch.Tensor | None = None
    spent: bool = False  # a second forward came: the journal no longer covers the state


@dataclass
class CompressorState:
    ratio: int
    entries: EntryBuffer  # (n_entries, width), normalised and rotated
    cur_kv: torch.Tensor  # (pos mod ratio, coff * width)
    cur_score: torch.Tensor  # (pos mod ratio, coff * width), gate + ape
    prev_kv: torch.Tensor | None  # ratio 4 only: (ratio, width)
    prev_score: torch.Tensor | None  # ratio 4 only: (ratio, width), -inf before block 0
    mark: CompressorMark | None = None  # while a rollback is possible (never saved or cloned)

    @classmethod
    def empty(cls, ratio: int, width: int) -> CompressorState:
        overlap = ratio == 4
        coff = 2 if overlap else 1
        return cls(
            ratio=ratio,
            entries=EntryBuffer(width),
            cur_kv=torch.empty(0, coff * width),
            cur_score=torch.empty(0, coff * width),
            prev_kv=torch.zeros(ratio, width) if overlap else None,
            prev_score=torch.full((ratio, width), float("-inf")) if overlap else None,
        )

    def clone(self) -> CompressorState:
        return CompressorState(
            ratio=self.ratio,
            entries=self.entries.clone(),
            cur_kv=self.cur_kv.clone(),
            cur_score=self.cur_score.clone(),
            prev_kv=None if self.prev_kv is None else self.prev_kv.clone(),
            prev_score=None if self.prev_score is None else self.prev_score.clone(),
        )

    def journal(self, rows_kv: torch.Tensor, rows_score: torch.Tensor) -> None:
        """Called by the forward with every row it saw (pending + new) before pooling."""
        if self.mark is not None:
            if self.mark.rows_kv is not None:
                self.mark.spent = True  # a forward never fails half-way: rollback will
            self.mark.rows_kv, self.mark.rows_score = rows_kv, rows_score

    def take_mark(self) -> None:
        self.mark = CompressorMark(self.entries.n, self.cur_kv, self.cur_score,
                                   self.prev_kv, self.prev_score)

    def rollback(self, start: int, pos: int) -> None:
        """Back to ``pos`` tokens, the mark having been taken at ``start`` (start <= pos)."""
        m, r = self.mark, self.ratio
        assert m is not None
        self.entries.n = pos // r  # rows past n are never read: no copy
        if m.rows_kv is None or m.rows_score is None:  # nothing was fed since the mark
            self.cur_kv, self.cur_score = m.cur_kv, m.cur_score
            self.prev_kv, self.prev_score = m.prev_kv, m.prev_score
            return
        base = start - m.cur_kv.size(0)  # the position of the journal's first row
        block = pos // r * r
        self.cur_kv = m.rows_kv[block - base : pos - base].clone()
        self.cur_score = m.rows_score[block - base : pos - base].clone()
        if self.prev_kv is None:
            return
        if block <= base:  # no block completed among the kept tokens
            self.prev_kv, self.prev_score = m.prev_kv, m.prev_score
        else:  # the last complete block's first-half channels, as the pooling keeps them
            width = self.entries.width
            self.prev_kv = m.rows_kv[block - r - base : block - base, :width].clone()
            self.prev_score = m.rows_score[block - r - base : block - base, :width].clone()

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"entries": self.entries.view(), "cur_kv": self.cur_kv, "cur_score": self.cur_score}
        if self.prev_kv is not None and self.prev_score is not None:
            out["prev_kv"], out["prev_score"] = self.prev_kv, self.prev_score
        return out


@dataclass
class LayerState:
    window: torch.Tensor  # (window_size, head_dim) ring, slot = pos mod window_size
    compressor: CompressorState | None
    indexer: CompressorState | None

    def recent(self, pos: int, count: int) -> torch.Tensor:
        """The window vectors of positions pos-count … pos-1, oldest first: (count, head_dim)."""
        w = self.window.size(0)
        if not layers.FAST_DECODE:
            return self.window[torch.arange(pos - count, pos) % w]
        # at most two slices of the ring: a gather costs ~10x a slice copy per decode step
        lo = (pos - count) % w
        if count == 0 or lo + count <= w:
            return self.window[lo : lo + count]
        return torch.cat((self.window[lo:], self.window[: lo + count - w]))

    def remember(self, pos: int, kv: torch.Tensor) -> None:
        """Write the KV of positions pos … pos+T-1 into the ring (only the last W survive)."""
        w, t = self.window.size(0), kv.size(0)
        keep = min(t, w)
        if not layers.FAST_DECODE:
            self.window[torch.arange(pos + t - keep, pos + t) % w] = kv[t - keep :]
            return
        start = (pos + t - keep) % w
        first = min(keep, w - start)
        self.window[start : start + first] = kv[t - keep : t - keep + first]
        if keep > first:
            self.window[: keep - first] = kv[t - keep + first :]

    def clone(self) -> LayerState:
        return LayerState(
            window=self.window.clone(),
            compressor=None if self.compressor is None else self.compressor.clone(),
            indexer=None if self.indexer is None else self.indexer.clone(),
        )


@dataclass
class Mark:
    """Where :meth:`SeqState.mark` was taken: the position, how many tokens may follow, and
    the ring rows (one (count, head_dim) tensor per layer) those tokens will overwrite."""

    pos: int
    count: int
    rings: list[torch.Tensor]


class SeqState:
    """The KV state of one sequence after ``pos`` tokens."""

    def __init__(self, cfg: ModelConfig, pos: int, layers: list[LayerState]) -> None:
        self.cfg = cfg
        self.pos = pos
        self.layers = layers
        self._mark: Mark | None = None

    def mark(self, count: int) -> Mark:
        """Make the next forward (of at most ``count`` tokens) undoable by :meth:`rollback`;
        :meth:`release` when it is no longer needed. Costs O(count) copies."""
        w = self.cfg.window_size
        if not 0 < count <= w:
            raise StateError(f"a mark covers 1 to window_size ({w}) tokens, got {count}")
        slots = torch.arange(self.pos, self.pos + count) % w
        rings = [layer.window[slots] for layer in self.layers]  # a gather copies
        for layer in self.layers:
            for cs in (layer.compressor, layer.indexer):
                if cs is not None:
                    cs.take_mark()
        self._mark = Mark(self.pos, count, rings)
        return self._mark

    def rollback(self, mark: Mark, pos: int) -> None:
        """Undo the tokens after ``pos`` (mark.pos <= pos <= self.pos): afterwards the state
        equals, tensor for tensor, one that only ever saw the first ``pos`` tokens. The mark
        stays valid for a rollback further back until :meth:`release`."""
        if mark is not self._mark:
            raise StateError("this mark is not the state's current one")
        if not mark.pos <= pos <= self.pos <= mark.pos + mark.count:
            raise StateError(f"cannot roll back to {pos}: the mark at {mark.pos} covers "
                             f"{mark.count} tokens and the state is at {self.pos}")
        if any(cs.mark is None or cs.mark.spent for layer in self.layers
               for cs in (layer.compressor, layer.indexer) if cs is not None):
            raise StateError("the state was advanced twice since the mark (one forward only)")
        w = self.cfg.window_size
        dropped = torch.arange(pos, self.pos) % w
        for layer, saved in zip(self.layers, mark.rings, strict=True):
            layer.window[dropped] = saved[pos - mark.pos : self.pos - mark.pos]
            for cs in (layer.compressor, layer.indexer):
                if cs is not None:
                    cs.rollback(mark.pos, pos)
        self.pos = pos

    def release(self) -> None:
        """Forget the mark: forwards stop journaling (a prefill would pin its rows)."""
        self._mark = None
        for layer in self.layers:
            for cs in (layer.compressor, layer.indexer):
                if cs is not None:
                    cs.mark = None

    @classmethod
    def new(cls, cfg: ModelConfig) -> SeqState:
        layers = []
        for i in range(cfg.n_layers):
            r = cfg.ratio(i)
            layers.append(
                LayerState(
                    window=torch.zeros(cfg.window_size, cfg.head_dim),
                    compressor=CompressorState.empty(r, cfg.head_dim) if r else None,
                    indexer=CompressorState.empty(r, cfg.index_head_dim) if r == 4 else None,
                )
            )
        return cls(cfg, 0, layers)

    @classmethod
    def new_mtp(cls, cfg: ModelConfig) -> SeqState:
        """The state of the MTP blocks: one window ring per block (they are window-only)."""
        return cls(cfg, 0, [LayerState(window=torch.zeros(cfg.window_size, cfg.head_dim),
                                       compressor=None, indexer=None)
                            for _ in range(cfg.n_mtp_layers)])

    def clone(self) -> SeqState:
        return SeqState(self.cfg, self.pos, [layer.clone() for layer in self.layers])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state by name, plus ``pos`` as a one-element int64 tensor."""
        out: dict[str, torch.Tensor] = {"pos": torch.tensor([self.pos], dtype=torch.int64)}
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.window"] = layer.window
            for part in ("compressor", "indexer"):
                cs: CompressorState | None = getattr(layer, part)
                if cs is not None:
                    for name, t in cs.tensors().items():
                        out[f"layers.{i}.{part}.{name}"] = t
        return {k: v.contiguous().clone() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> SeqState:
        """Rebuild a state saved by :meth:`to_tensors`; raises :class:`StateError` on misfit."""
        pos_t = tensors.get("pos")
        if pos_t is None or pos_t.numel() != 1 or pos_t.dtype != torch.int64:
            raise StateError("state has no 'pos' (one int64 value)")
        pos = int(pos_t.item())
        if pos < 0:
            raise StateError(f"state pos must be >= 0, got {pos}")
        template = cls.new(cfg)
        expected = _expected_shapes(cfg, pos)
        unknown = sorted(set(tensors) - set(expected) - {"pos"})
        if unknown:
            raise StateError(f"state has tensors this model does not keep: {unknown[:5]}")
        for name, shape in expected.items():
            t = tensors.get(name)
            if t is None:
                raise StateError(f"state is missing {name!r} (a different model config?)")
            if tuple(t.shape) != shape:
                raise StateError(f"state tensor {name!r} has shape {tuple(t.shape)}, "
                                 f"expected {shape} at pos {pos}")
            if not t.is_floating_point():
                raise StateError(f"state tensor {name!r} must be floating point, got {t.dtype}")

        def get(name: str) -> torch.Tensor:
            return tensors[name].to(torch.float32).clone()

        for i, layer in enumerate(template.layers):
            layer.window = get(f"layers.{i}.window")
            for part in ("compressor", "indexer"):
                cs: CompressorState | None = getattr(layer, part)
                if cs is None:
                    continue
                key = f"layers.{i}.{part}."
                cs.entries = EntryBuffer(cs.entries.width, get(key + "entries"))
                cs.cur_kv, cs.cur_score = get(key + "cur_kv"), get(key + "cur_score")
                if cs.prev_kv is not None:
                    cs.prev_kv, cs.prev_score = get(key + "prev_kv"), get(key + "prev_score")
        template.pos = pos
        return template

    def nbytes(self) -> int:
        """Bytes of the KV state as saved: window rings, compressed entries, indexer keys and
        pending rows (the fixed-size ring is counted whole)."""
        total = 0
        for layer in self.layers:
            total += layer.window.numel() * layer.window.element_size()
            for cs in (layer.compressor, layer.indexer):
                if cs is not None:
                    total += sum(t.numel() * t.element_size() for t in cs.tensors().values())
        return total


def _expected_shapes(cfg: ModelConfig, pos: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(cfg.n_layers):
        shapes[f"layers.{i}.window"] = (cfg.window_size, cfg.head_dim)
        r = cfg.ratio(i)
        if not r:
            continue
        parts = [("compressor", cfg.head_dim)]
        if r == 4:
            parts.append(("indexer", cfg.index_head_dim))
        for part, width in parts:
            coff = 2 if r == 4 else 1
            key = f"layers.{i}.{part}."
            shapes[key + "entries"] = (pos // r, width)
            shapes[key + "cur_kv"] = (pos % r, coff * width)
            shapes[key + "cur_score"] = (pos % r, coff * width)
            if r == 4:
                shapes[key + "prev_kv"] = (r, width)
                shapes[key + "prev_score"] = (r, width)
    return shapes
