"""Many conversations in one forward: the training path's batched V4 forward.

:meth:`whalebone.engine.v4.model.Transformer.forward` runs one sequence (it serves inference).
Training continues B conversations from one shared head (the system prompt and tool list, run
once without gradients) and gets far more work per Python-level op by stacking them:
``ids`` (B, T) right-padded. Everything token-wise (hyper-connections, norms, projections, MoE)
sees B·T rows at once; attention is written here for (B, T) against the head's state.

Right padding is exact for a causal model: a real token at position t sees window keys ≤ t and
compressed entries whose block is complete by t (``j < (t+1) // r``). Pads are only at the end,
so any block holding a pad completes at a pad's position or later and no real token sees it;
the loss skips pads. The lightning indexer's top-k is a mask over all compressed entries
(scores for every entry, then -inf outside each query's k) instead of a per-query gather of
(T, k, D) keys: the same keys win, with the same tie rule
(:func:`whalebone.engine.v4.attention.top_k_mask`). ``tests/test_training.py`` holds the
batched loss to the per-conversation one.

Multi-token prediction (:func:`batch_losses`): V4's MTP block at position i takes the trunk's
final streams h_i and the embedding of token i+1, and predicts token i+2. The conversation's
first MTP position is the head's last (its next token is the conversation's first, so each row
differs there): :func:`run_head` leaves the MTP block's state after the head's other positions
and hands over the head's last streams. MTP position i's target, token i+2, is the trunk's
target at i+1, so both losses cover the same assistant tokens. The block runs through the same
batched :func:`_block` as the trunk's layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from whalebone.engine.v4.attention import QUERY_BLOCK, Attention, Compressor, top_k_mask
from whalebone.engine.v4.hyper import _mixes, hc_post
from whalebone.engine.v4.layers import apply_rope_, rope_table
from whalebone.engine.v4.model import Block, Transformer
from whalebone.engine.v4.state import CompressorState, LayerState, SeqState


@dataclass
class MTPHead:
    """What the MTP block needs of a shared head of P tokens: its state after positions
    0 … P-2 (``pos`` P-1) and the trunk's final streams at P-1 (hc, dim)."""

    state: SeqState
    last: torch.Tensor


def run_head(model: Transformer, ids: torch.Tensor) -> tuple[SeqState, MTPHead | None]:
    """A shared head (P,) through the trunk, and through the MTP block when the model has
    one, without gradients: the states that :func:`batch_losses` continues."""
    state = model.new_state()
    with torch.no_grad():
        h = model.embed(ids).unsqueeze(1).repeat(1, model.cfg.hc_mult, 1)
        for layer, st in zip(model.layers, state.layers, strict=True):
            h = layer(h, st, 0, ids)
        state.pos = ids.size(0)
        if not model.has_mtp:
            return state, None
        mtp_state = model.new_mtp_state()
        if ids.size(0) > 1:
            block = model.mtp[0]
            x = block.mix_input(model.embed(ids[1:]), h[:-1])
            block(x, mtp_state.layers[0], 0, ids[1:])
            mtp_state.pos = ids.size(0) - 1
    return state, MTPHead(mtp_state, h[-1])


def batch_loss(model: Transformer, head: SeqState, ids: torch.Tensor,
               loss_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of next-token predictions where ``loss_mask`` (B, T) marks the
    *target* token, and the number of targets. ``ids`` (B, T) continue ``head`` (not changed)."""
    loss, _, n = batch_losses(model, head, None, ids, loss_mask)
    return loss, n


def batch_losses(model: Transformer, head: SeqState, mtp_head: MTPHead | None,
                 ids: torch.Tensor, loss_mask: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The trunk's summed next-token cross-entropy, the MTP block's summed cross-entropy on
    the same targets (None without ``mtp_head``), and the number of targets. ``loss_mask``
    (B, T) marks target tokens; ``ids`` (B, T) continue ``head`` and ``mtp_head`` (neither
    is changed). A trunk whose parameters do not require gradients records no graph, so the
    MTP loss then trains the MTP block alone."""
    predicts = loss_mask[:, 1:]  # position i predicts token i+1
    targets = ids[:, 1:][predicts]
    logits, mtp_logits = batch_outputs(model, head, mtp_head, ids, predicts)
    loss = F.cross_entropy(logits, targets, reduction="sum")
    mtp = None if mtp_logits is None else F.cross_entropy(mtp_logits, targets, reduction="sum")
    return loss, mtp, int(predicts.sum())


def batch_outputs(model: Transformer, head: SeqState, mtp_head: MTPHead | None,
                  ids: torch.Tensor, where: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For each token j+1 that ``where`` (B, T-1) marks at j: the trunk's logits from
    position j and the MTP block's from position j-1 (its token after next), (M, V) each;
    the MTP logits are None without ``mtp_head``."""
    h = trunk_streams(model, head, ids)
    logits = model.logits(h[:, :-1][where])
    if mtp_head is None:
        return logits, None
    if ids.size(1) < 2:  # nothing two tokens ahead
        return logits, logits.new_zeros(0, logits.size(-1))
    # MTP positions P-1 … P+T-3: the head's last streams, then the conversation's
    b, _, hc, dim = h.shape
    streams = torch.cat((mtp_head.last.expand(b, 1, hc, dim), h[:, :-2]), dim=1)
    nxt = ids[:, :-1]  # the token after each of them
    block = model.mtp[0]
    x = block.mix_input(model.embed(nxt), streams)
    x = _block(block, x, mtp_head.state.layers[0], mtp_head.state.pos, nxt)
    return logits, block.logits(x[where], model.head)


def trunk_streams(model: Transformer, head: SeqState, ids: torch.Tensor) -> torch.Tensor:
    """The trunk's final streams (B, T, hc, dim) of ``ids`` (B, T) continuing ``head``."""
    h = model.embed(ids).unsqueeze(2).repeat(1, 1, model.cfg.hc_mult, 1)  # (B, T, hc, dim)
    for layer, st in zip(model.layers, head.layers, strict=True):
        h = _block(layer, h, st, head.pos, ids)
    return h


def batch_logits(model: Transformer, head: SeqState, ids: torch.Tensor,
                 where: torch.Tensor) -> torch.Tensor:
    """Logits (M, V) at the positions ``where`` (B, T-1) marks, predicting the token after.

    Only those positions go through the LM head (assistant tokens are a fraction of each
    conversation; the head is the largest single matmul)."""
    return model.logits(trunk_streams(model, head, ids)[:, :-1][where])


def _block(block: Block, h: torch.Tensor, st: LayerState, pos: int,
           ids: torch.Tensor) -> torch.Tensor:
    c = block.cfg
    b, t, hc, dim = h.shape
    flat = h.reshape(b * t, hc, dim)
    x, post, comb = _hc_pre(flat, block.hc_attn_fn, block.hc_attn_scale, block.hc_attn_base,
                           c.hc_sinkhorn_iters, c.norm_eps, c.hc_eps)
    a = _attention(block.attn, block.attn_norm(x).view(b, t, dim), st, pos)
    flat = hc_post(a.reshape(b * t, dim), flat, post, comb)
    x, post, comb = _hc_pre(flat, block.hc_ffn_fn, block.hc_ffn_scale, block.hc_ffn_base,
                           c.hc_sinkhorn_iters, c.norm_eps, c.hc_eps)
    flat = hc_post(block.ffn(block.ffn_norm(x), ids.reshape(-1)), flat, post, comb)
    return flat.view(b, t, hc, dim)


def _hc_pre(h: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor,
            iters: int, norm_eps: float, hc_eps: float,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`whalebone.engine.v4.hyper.hc_pre` with the hand-differentiated Sinkhorn."""
    pre, post, comb = sinkhorn_split(_mixes(h, fn, norm_eps), scale, base, h.size(1), iters,
                                     hc_eps)
    return (pre.unsqueeze(-1) * h).sum(dim=1), post, comb


def _attention(attn: Attention, x: torch.Tensor, st: LayerState, pos: int) -> torch.Tensor:
    """x (B, T, dim) normalised input of positions pos … pos+T-1 after the head -> (B, T, dim)."""
    cfg = attn.cfg
    b, t = x.shape[:2]
    h, d, win = cfg.n_heads, cfg.head_dim, cfg.window_size
    cos, sin = rope_table(attn.freqs, torch.arange(pos, pos + t))  # (T, R/2)

    qr = attn.q_norm(attn.wq_a(x))  # (B, T, q_lora)
    q = attn.wq_b(qr).unflatten(-1, (h, d))  # (B, T, H, D)
    q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + cfg.norm_eps)
    q = apply_rope_(q, cos[:, None], sin[:, None])
    kv = apply_rope_(attn.kv_norm(attn.wkv(x)), cos, sin)  # (B, T, D)

    # the window: the head's last keys (shared) and the conversation's own (causal)
    n_old = min(pos, win - 1)
    local = torch.cat((st.recent(pos, n_old).expand(b, -1, -1), kv), dim=1)  # (B, n_old+T, D)
    comp, keep = None, None
    if attn.compressor is not None:
        assert st.compressor is not None
        comp = _entries(attn.compressor, x, st.compressor, pos, attn.freqs)  # (B, N, D)
        qpos = torch.arange(pos, pos + t)
        visible = torch.arange(comp.size(1))[None] < ((qpos + 1) // attn.ratio)[:, None]
        keep = visible[None].expand(b, -1, -1)  # (B, T, N)
        if attn.indexer is not None:
            assert st.indexer is not None
            ix = attn.indexer
            keys = _entries(ix.compressor, x, st.indexer, pos, attn.freqs)  # (B, N, Di)
            iq, iw = ix.queries(x, qr, cos, sin)  # (B, T, Hi, Di), (B, T, Hi)
            with torch.no_grad():  # it only chooses (the indexer is not trained here)
                score = (torch.einsum("bthd,bnd->bthn", iq, keys).relu_()
                         * iw[..., None]).sum(2).masked_fill_(~keep, float("-inf"))
            k = min(cfg.index_topk, comp.size(1))
            keep = (keep & top_k_mask(score, k)) if k else torch.zeros_like(keep)
    # query blocks as in the engine: a block sees QUERY_BLOCK + window - 1 window keys, not T
    out = torch.cat([_attend_block(attn, q, a, min(a + QUERY_BLOCK, t), pos, n_old, local,
                                   comp, keep) for a in range(0, t, QUERY_BLOCK)], dim=1)
    out = apply_rope_(out, cos[:, None], sin[:, None], inverse=True)
    g = cfg.o_groups
    wo_a = attn.wo_a.weight.view(g, cfg.o_lora_rank, -1)  # (G, o_lora, H*D/G)
    out = torch.einsum("btgd,grd->btgr", out.reshape(b, t, g, -1), wo_a)
    return attn.wo_b(out.flatten(2))


def _attend_block(attn: Attention, q: torch.Tensor, a: int, b: int, pos: int, n_old: int,
                  local: torch.Tensor, comp: torch.Tensor | None,
                  keep: torch.Tensor | None) -> torch.Tensor:
    """Queries a … b-1 (positions pos+a …): one softmax over the window keys they see, their
    compressed keys (all entries, ``keep`` masking the rest) and the sink -> (B, Tq, H, D)."""
    win, h = attn.cfg.window_size, attn.cfg.n_heads
    qb = q[:, a:b]
    lo, hi = max(0, n_old + a - win + 1), n_old + b  # indices into local (starts at pos-n_old)
    keys = local[:, lo:hi]  # (B, Kl, D)
    qpos = torch.arange(a, b)[:, None]
    kpos = torch.arange(lo, hi)[None] - n_old
    seen = (kpos <= qpos) & (kpos > qpos - win)  # (Tq, Kl)
    scores = [torch.einsum("bthd,bkd->bthk", qb, keys).mul_(attn.scale)
              .masked_fill_(~seen[:, None], float("-inf"))]
    if comp is not None and keep is not None:
        s = torch.einsum("bthd,bnd->bthn", qb, comp).mul_(attn.scale)
        scores.append(s.masked_fill_(~keep[:, a:b, None], float("-inf")))
    sink = attn.attn_sink.view(1, 1, h, 1).expand(q.size(0), b - a, h, 1)  # denominator only
    probs = torch.cat((*scores, sink), dim=-1).softmax(dim=-1)
    out = torch.einsum("bthk,bkd->bthd", probs[..., : keys.size(1)], keys)
    if comp is not None:
        out = out + torch.einsum("bthn,bnd->bthd", probs[..., keys.size(1) : -1], comp)
    return out


def _entries(comp: Compressor, x: torch.Tensor, cs: CompressorState, pos: int,
             freqs: torch.Tensor) -> torch.Tensor:
    """Every compressed entry each conversation has: the head's (shared) and those of the
    blocks it completes itself -> (B, N, width); ``cs`` is not changed."""
    assert not comp.quant_sim, "training runs without simulated quantization"
    r, d = comp.ratio, comp.width
    b, t = x.shape[:2]
    head = cs.entries.view()
    kv = comp.wkv(x)  # (B, T, coff*d)
    score = comp.wgate(x) + comp.ape[torch.arange(pos, pos + t) % r]
    rows_kv = torch.cat((cs.cur_kv.expand(b, -1, -1), kv), dim=1)  # from a block boundary
    rows_score = torch.cat((cs.cur_score.expand(b, -1, -1), score), dim=1)
    n_blocks = rows_kv.size(1) // r
    if not n_blocks:
        return head.expand(b, -1, -1)
    cut = n_blocks * r
    blk_kv = rows_kv[:, :cut].unflatten(1, (n_blocks, r))  # (B, nb, r, coff*d)
    blk_score = rows_score[:, :cut].unflatten(1, (n_blocks, r))
    if comp.overlap:
        assert cs.prev_kv is not None and cs.prev_score is not None
        prev_kv = torch.cat((cs.prev_kv.expand(b, 1, -1, -1), blk_kv[:, :-1, :, :d]), dim=1)
        prev_score = torch.cat((cs.prev_score.expand(b, 1, -1, -1), blk_score[:, :-1, :, :d]),
                               dim=1)
        pool_kv = torch.cat((prev_kv, blk_kv[..., d:]), dim=2)  # (B, nb, 2r, d)
        pool_score = torch.cat((prev_score, blk_score[..., d:]), dim=2)
    else:
        pool_kv, pool_score = blk_kv, blk_score
    entries = comp.norm((pool_kv * pool_score.softmax(dim=2)).sum(dim=2))  # (B, nb, d)
    first = (pos - cs.cur_kv.size(0)) // r
    cos, sin = rope_table(freqs, torch.arange(first, first + n_blocks) * r)
    entries = apply_rope_(entries, cos, sin)
    return torch.cat((head.expand(b, -1, -1), entries), dim=1)


def pad_batch(convs: list[tuple[list[int], list[bool]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Conversations (ids, loss mask) right-padded into ids (B, T) and a mask (B, T) that is
    False on every pad (padding is exact: see :mod:`whalebone.training.batch`)."""
    t = max(len(ids) for ids, _ in convs)
    ids = torch.zeros(len(convs), t, dtype=torch.long)
    mask = torch.zeros(len(convs), t, dtype=torch.bool)
    for i, (row, mine) in enumerate(convs):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = torch.tensor(mine)
    return ids, mask


def micro_batches(convs: list[tuple[list[int], list[bool]]],
                  max_tokens: int) -> list[list[tuple[list[int], list[bool]]]]:
    """Length-sorted groups whose padded size (rows x longest) stays within ``max_tokens``
    (one conversation alone may exceed it): little padding, bounded memory."""
    out: list[list[tuple[list[int], list[bool]]]] = []
    for conv in sorted(convs, key=lambda c: len(c[0])):
        if out and (len(out[-1]) + 1) * len(conv[0]) <= max_tokens:
            out[-1].append(conv)
        else:
            out.append([conv])
    return out


class _Sinkhorn(torch.autograd.Function):
    """V4's comb normalisation (:func:`whalebone.engine.v4.hyper.sinkhorn_split`: softmax over
    rows + eps, then alternating column/row division by sum + eps) with a hand-written
    backward: each division y = x / (Σx + e) passes back (g - Σ g·y) / (Σx + e), four ops on
    the saved y and divisor instead of autograd's ~8 per step (issue 15 measured the
    iterations at 6% of the forward and more of the backward)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, e: torch.Tensor, iters: int) -> torch.Tensor:
        p = logits.softmax(dim=-1)
        x = p + e
        saved = [p]
        dims = [-2] + [-1, -2] * (iters - 1)
        for d in dims:
            s = x.sum(dim=d, keepdim=True) + e
            x = x / s
            saved += [x, s]
        ctx.dims = dims
        ctx.save_for_backward(*saved)
        return x

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g = grads[0]
        p, *rest = ctx.saved_tensors
        for k in range(len(ctx.dims) - 1, -1, -1):
            y, s = rest[2 * k], rest[2 * k + 1]
            g = (g - (g * y).sum(dim=ctx.dims[k], keepdim=True)) / s
        return p * (g - (g * p).sum(dim=-1, keepdim=True)), None, None


def sinkhorn_split(mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, hc: int,
                   iters: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`whalebone.engine.v4.hyper.sinkhorn_split` with the comb normalisation above."""
    pre = torch.sigmoid(mixes[:, :hc] * scale[0] + base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[:, hc : 2 * hc] * scale[1] + base[hc : 2 * hc])
    comb = mixes[:, 2 * hc :].unflatten(-1, (hc, hc)) * scale[2] + base[2 * hc :].view(hc, hc)
    return pre, post, _Sinkhorn.apply(comb, torch.full((), eps), iters)
