"""V4 attention: window KV, the two compressors, the lightning indexer, one softmax with a sink.

Shapes: T new tokens of one sequence starting at position ``pos``; H query heads of D channels
(the last R of them rotary); one D-vector per token serves as both key and value (MQA); the
compressor of ratio r turns every complete block of r tokens into one entry.

A query at position t attends to (one softmax over all of them, plus a per-head sink that only
adds to the denominator):

- the window: keys of positions t-W+1 … t (itself included);
- ratio 128 (any ratio but 4): every complete entry, j < (t+1) // r;
- ratio 4: the indexer's top-k complete entries by score Σ_h ReLU(q_h·k_j) · w_h(x).

Any chunk works the same way as a prefill from 0 or a single decode step: the state holds the
ring and the compressors' pending rows (see :mod:`whalebone.engine.v4.state`), and queries are
processed in blocks so that a 32K-token prefill never builds a T×N matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.layers import (
    Linear,
    RMSNorm,
    apply_rope_,
    exact_rows,
    rope_freqs,
    rope_table,
)
from whalebone.engine.v4.quant import fp4_round, fp8_round, hadamard
from whalebone.engine.v4.state import CompressorState, LayerState

# queries per attention block in a prefill: bounds memory (not results); the block's window
# spans QUERY_BLOCK + window - 1 keys, so smaller blocks waste fewer window dot products
QUERY_BLOCK = 128
SCORE_BUDGET = 1 << 25  # values in one indexer-score temporary (128 MB in FP32)


class Compressor(nn.Module):
    """Gated pooling of each complete block of ``ratio`` tokens into one ``width``-vector.

    Ratio 4 overlaps: entry j pools 8 rows, the 4 tokens of block j-1 through the first half of
    the projection channels and the 4 tokens of block j through the second half.
    """

    def __init__(self, cfg: ModelConfig, ratio: int, width: int) -> None:
        super().__init__()
        self.ratio, self.width = ratio, width
        self.overlap = ratio == 4
        coff = 2 if self.overlap else 1
        self.ape = nn.Parameter(torch.zeros(ratio, coff * width))  # gate bias by pos mod ratio
        self.wkv = Linear(cfg.dim, coff * width)
        self.wgate = Linear(cfg.dim, coff * width)
        self.norm = RMSNorm(width, cfg.norm_eps)
        self.rope_dim = cfg.rope_head_dim
        self.for_indexer = False  # set by Indexer: its keys are rotated and FP4 when simulated
        self.quant_sim = False

    def forward(self, x: torch.Tensor, cs: CompressorState, pos: int, freqs: torch.Tensor) -> None:
        """Feed the rows of positions pos … pos+T-1 (x: (T, dim)); append complete entries."""
        r, d = self.ratio, self.width
        t = x.size(0)
        kv = self.wkv(x)  # (T, coff*d)
        score = self.wgate(x) + self.ape[torch.arange(pos, pos + t) % r]  # (T, coff*d)
        rows_kv = torch.cat((cs.cur_kv, kv))  # (c+T, coff*d), starting at a block boundary
        rows_score = torch.cat((cs.cur_score, score))
        cs.journal(rows_kv, rows_score)  # kept while a rollback is possible (SeqState.mark)
        first_block = (pos - cs.cur_kv.size(0)) // r
        n_blocks = rows_kv.size(0) // r
        cut = n_blocks * r
        if n_blocks:
            blk_kv = rows_kv[:cut].view(n_blocks, r, -1)  # (nb, r, coff*d)
            blk_score = rows_score[:cut].view(n_blocks, r, -1)
            if self.overlap:
                assert cs.prev_kv is not None and cs.prev_score is not None
                # the first-half channels of the previous block join each block's second half
                prev_kv = torch.cat((cs.prev_kv[None], blk_kv[:-1, :, :d]))  # (nb, r, d)
                prev_score = torch.cat((cs.prev_score[None], blk_score[:-1, :, :d]))
                pool_kv = torch.cat((prev_kv, blk_kv[:, :, d:]), dim=1)  # (nb, 2r, d)
                pool_score = torch.cat((prev_score, blk_score[:, :, d:]), dim=1)
                cs.prev_kv = blk_kv[-1, :, :d].clone()
                cs.prev_score = blk_score[-1, :, :d].clone()
            else:
                pool_kv, pool_score = blk_kv, blk_score
            entries = (pool_kv * pool_score.softmax(dim=1)).sum(dim=1)  # (nb, d)
            entries = self.norm(entries)
            cos, sin = rope_table(freqs, torch.arange(first_block, first_block + n_blocks) * r)
            entries = apply_rope_(entries, cos, sin)
            if self.quant_sim:
                entries = fp4_round(hadamard(entries)) if self.for_indexer else _fp8_nope(
                    entries, self.rope_dim)
            cs.entries.append(entries)
        cs.cur_kv = rows_kv[cut:].clone()
        cs.cur_score = rows_score[cut:].clone()


class Indexer(nn.Module):
    """The lightning indexer of ratio-4 layers: its own compressor at ``index_head_dim`` and a
    multi-head ReLU score. The release's Hadamard rotation of queries and keys is orthogonal
    and changes no score without its FP4 rounding, so it runs only when quantization is
    simulated."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.index_n_heads, cfg.index_head_dim
        self.wq_b = Linear(cfg.q_lora_rank, self.n_heads * self.head_dim)
        self.weights_proj = Linear(cfg.dim, self.n_heads)
        self.compressor = Compressor(cfg, 4, self.head_dim)
        self.compressor.for_indexer = True
        self.quant_sim = False

    def queries(
        self, x: torch.Tensor, qr: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Index queries (T, Hi, Di) and head weights (T, Hi)."""
        q = self.wq_b(qr).unflatten(-1, (self.n_heads, self.head_dim))
        q = apply_rope_(q, cos[:, None], sin[:, None])
        if self.quant_sim:
            q = fp4_round(hadamard(q))
        w = self.weights_proj(x) * (self.head_dim**-0.5 * self.n_heads**-0.5)
        return q, w

    @staticmethod
    def scores(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """score[t, j] = Σ_h ReLU(q[t,h]·keys[j]) · w[t,h]: (Tq, N).

        Heads are taken a few at a time so that the (Tq, heads, N) temporary stays within
        SCORE_BUDGET values at long contexts (64 heads x 262K entries at 1M tokens)."""
        tq, heads, _ = q.shape
        step = max(1, min(heads, SCORE_BUDGET // max(1, tq * keys.size(0))))
        total = torch.zeros(tq, keys.size(0))
        for h in range(0, heads, step):
            part = torch.einsum("thd,nd->thn", q[:, h : h + step], keys).relu_()
            total += part.mul_(w[:, h : h + step, None]).sum(dim=1)
        return total


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.ratio = cfg.ratio(layer)
        h, d = cfg.n_heads, cfg.head_dim
        self.attn_sink = nn.Parameter(torch.zeros(h))
        self.wq_a = Linear(cfg.dim, cfg.q_lora_rank)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
        self.wq_b = Linear(cfg.q_lora_rank, h * d)
        self.wkv = Linear(cfg.dim, d)
        self.kv_norm = RMSNorm(d, cfg.norm_eps)
        self.wo_a = Linear(h * d // cfg.o_groups, cfg.o_groups * cfg.o_lora_rank)
        self.wo_b = Linear(cfg.o_groups * cfg.o_lora_rank, cfg.dim)
        self.compressor = Compressor(cfg, self.ratio, d) if self.ratio else None
        self.indexer = Indexer(cfg) if self.ratio == 4 else None
        freqs = rope_freqs(cfg, compressed=bool(self.ratio))
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = d**-0.5
        self.quant_sim = False

    def forward(self, x: torch.Tensor, st: LayerState, pos: int) -> torch.Tensor:
        """x: (T, dim) normalised input of positions pos … pos+T-1 -> (T, dim)."""
        cfg = self.cfg
        t, h, d, win = x.size(0), cfg.n_heads, cfg.head_dim, cfg.window_size
        cos, sin = rope_table(self.freqs, torch.arange(pos, pos + t))  # (T, R/2)

        qr = self.q_norm(self.wq_a(x))  # (T, q_lora)
        q = self.wq_b(qr).unflatten(-1, (h, d))  # (T, H, D)
        q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + cfg.norm_eps)  # weightless
        q = apply_rope_(q, cos[:, None], sin[:, None])

        kv = apply_rope_(self.kv_norm(self.wkv(x)), cos, sin)  # (T, D): key and value
        if self.quant_sim:
            kv = _fp8_nope(kv, cfg.rope_head_dim)
        n_old = min(pos, win - 1)
        local = torch.cat((st.recent(pos, n_old), kv))  # (n_old+T, D), from pos-n_old
        st.remember(pos, kv)

        comp: _Compressed | None = None
        if self.compressor is not None:
            assert st.compressor is not None
            self.compressor(x, st.compressor, pos, self.freqs)
            comp = _Compressed(st.compressor.entries.view())  # (N, D)
        if self.indexer is not None and comp is not None:
            assert st.indexer is not None
            self.indexer.compressor(x, st.indexer, pos, self.freqs)
            comp.index_keys = st.indexer.entries.view()  # (N, Di)
            comp.index_q, comp.index_w = self.indexer.queries(x, qr, cos, sin)

        out = torch.empty(t, h, d)
        # one query per block when rows must be exact: each sees the keys of a one-token step
        block = 1 if exact_rows(t) else QUERY_BLOCK
        for a in range(0, t, block):
            b = min(a + block, t)
            out[a:b] = self._attend_block(q, a, b, pos, local, pos - n_old, comp)
        out = apply_rope_(out, cos[:, None], sin[:, None], inverse=True)
        g = cfg.o_groups
        out = out.view(t, g, -1)  # (T, G, H*D/G)
        wo_a = self.wo_a.weight.view(g, cfg.o_lora_rank, -1)  # (G, o_lora, H*D/G)
        if exact_rows(t):  # the per-group product runs M=t: one row at a time instead
            out = torch.cat([torch.einsum("tgd,grd->tgr", row, wo_a) for row in out.split(1)])
        else:
            out = torch.einsum("tgd,grd->tgr", out, wo_a)  # (T, G, o_lora)
        return self.wo_b(out.flatten(1))

    def _attend_block(
        self, q: torch.Tensor, a: int, b: int, pos: int, local: torch.Tensor, local_start: int,
        comp: _Compressed | None,
    ) -> torch.Tensor:
        """Queries a … b-1 of the chunk (positions pos+a …): one softmax over the window keys
        they see, their compressed keys and the sink -> (Tq, H, D)."""
        win, h = self.cfg.window_size, self.cfg.n_heads
        qb = q[a:b]  # (Tq, H, D)
        qpos = torch.arange(pos + a, pos + b)  # (Tq,) absolute positions
        k_lo, k_hi = max(0, pos + a - win + 1 - local_start), pos + b - local_start
        keys = local[k_lo:k_hi]  # (Kl, D): the window keys any query of the block sees
        kpos = torch.arange(k_lo, k_hi) + local_start
        seen = (kpos[None] <= qpos[:, None]) & (kpos[None] > qpos[:, None] - win)  # (Tq, Kl)
        scores = [(torch.einsum("thd,kd->thk", qb, keys) * self.scale)
                  .masked_fill(~seen[:, None], float("-inf"))]
        comp_keys = None
        if comp is not None:
            s_comp, comp_keys = self._compressed_scores(qb, qpos, comp, a, b)
            scores.append(s_comp)
        sink = self.attn_sink.view(1, h, 1).expand(b - a, h, 1)  # only in the denominator
        probs = torch.cat((*scores, sink), dim=-1).softmax(dim=-1)  # (Tq, H, Kl+Kc+1)
        out = torch.einsum("thk,kd->thd", probs[..., : keys.size(0)], keys)
        if comp_keys is not None:
            p_comp = probs[..., keys.size(0) : -1]
            pattern = "thk,tkd->thd" if comp_keys.dim() == 3 else "thk,kd->thd"
            out = out + torch.einsum(pattern, p_comp, comp_keys)
        return out

    def _compressed_scores(
        self, q: torch.Tensor, qpos: torch.Tensor, comp: _Compressed, a: int, b: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (Tq, H, K) of the compressed keys this query block sees, and those keys:
        (K, D) shared by the block, or (Tq, K, D) when the indexer picks per query."""
        r = self.ratio
        visible = (qpos + 1) // r  # (Tq,) entries complete at each query
        n_vis = int(visible[-1])
        if comp.index_q is None or comp.index_w is None or comp.index_keys is None:
            keys = comp.entries[:n_vis]  # (K, D)
            s = torch.einsum("thd,kd->thk", q, keys) * self.scale
            mask = torch.arange(n_vis)[None] >= visible[:, None]  # (Tq, K)
            return s.masked_fill(mask[:, None], float("-inf")), keys
        k = min(self.cfg.index_topk, n_vis)
        if k == 0:
            return q.new_empty(q.size(0), q.size(1), 0), comp.entries[:0]
        score = Indexer.scores(comp.index_q[a:b], comp.index_w[a:b], comp.index_keys[:n_vis])
        score = score.masked_fill(torch.arange(n_vis)[None] >= visible[:, None], float("-inf"))
        picked = _top_k_oldest_first(score, k)  # (Tq, k)
        keys = comp.entries[picked]  # (Tq, k, D)
        s = torch.einsum("thd,tkd->thk", q, keys) * self.scale
        # a query with fewer than k complete entries picked some masked ones: drop those
        return s.masked_fill((picked >= visible[:, None])[:, None], float("-inf")), keys


@dataclass
class _Compressed:
    """A compressed layer's keys for this forward: entries (N, D) and, on ratio-4 layers, the
    indexer's keys (N, Di) and its queries (T, Hi, Di) and head weights (T, Hi)."""

    entries: torch.Tensor
    index_keys: torch.Tensor | None = None
    index_q: torch.Tensor | None = None
    index_w: torch.Tensor | None = None


def _top_k_oldest_first(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (Tq, k) of each row's k highest scores, ties at the k-th score going to the
    lowest index. ReLU scores tie exactly (at 0) whenever every head is negative, and
    ``topk`` breaks ties by memory layout, which would make a query's choice depend on how
    the sequence was chunked; a full stable sort is correct too but far slower at 8K entries."""
    return top_k_mask(score, k).nonzero()[:, 1].view(score.size(0), k)


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """A boolean mask (…, N) of each row's k highest scores, ties at the k-th going to the
    lowest index: :func:`_top_k_oldest_first` as a mask (training masks scores instead of
    gathering keys)."""
    kth = score.topk(k, dim=-1).values[..., -1:]  # (…, 1)
    above = score > kth
    tied = score == kth
    room = k - above.sum(dim=-1, keepdim=True)  # how many tied entries still fit
    return above | (tied & (tied.cumsum(dim=-1) <= room))  # exactly k per row


def _fp8_nope(kv: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """FP8-round the non-RoPE channels in blocks of 64 (V4's QAT); RoPE channels stay exact."""
    nope = kv[..., :-rope_dim]
    block = 64 if nope.size(-1) % 64 == 0 else nope.size(-1)
    return torch.cat((fp8_round(nope, block), kv[..., -rope_dim:]), dim=-1)
