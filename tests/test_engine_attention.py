"""V4 attention against a per-query reference written straight from the architecture notes."""

from __future__ import annotations

import pytest
import torch

from whalebone.engine.v4 import attention as attention_module
from whalebone.engine.v4.attention import Attention, Compressor
from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.layers import apply_rope, rope_table
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.state import CompressorState, SeqState

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _layer(ratio: int, topk: int = 3) -> tuple[Attention, ModelConfig]:
    cfg = ModelConfig.preset("micro").replace(
        n_layers=1, n_hash_layers=0, compress_ratios=(ratio,), window_size=8, index_topk=topk
    )
    return Transformer(cfg, seed=ratio + topk).layers[0].attn, cfg


def _reference_entries(comp: Compressor, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Entry j pools block j (ratio 4: first half of block j-1's channels + second half of
    block j's, one softmax over the 8 rows per channel), then RMSNorm and RoPE at j·r."""
    r, d = comp.ratio, comp.width
    kv = comp.wkv(x)
    score = comp.wgate(x) + comp.ape[torch.arange(x.size(0)) % r]
    out = []
    for j in range(x.size(0) // r):
        rows = slice(j * r, (j + 1) * r)
        if comp.overlap:
            prev = slice((j - 1) * r, j * r)
            prev_kv = kv[prev, :d] if j else torch.zeros(r, d)
            prev_score = score[prev, :d] if j else torch.full((r, d), float("-inf"))
            k = torch.cat((prev_kv, kv[rows, d:]))
            s = torch.cat((prev_score, score[rows, d:]))
        else:
            k, s = kv[rows], score[rows]
        pooled = comp.norm((k * s.softmax(dim=0)).sum(dim=0))
        cos, sin = rope_table(freqs, torch.tensor([j * r]))
        out.append(apply_rope(pooled[None], cos, sin)[0])
    return torch.stack(out) if out else torch.empty(0, d)


def _reference_attention(attn: Attention, cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    t_len, h, d, w, r = x.size(0), cfg.n_heads, cfg.head_dim, cfg.window_size, attn.ratio
    cos, sin = rope_table(attn.freqs, torch.arange(t_len))
    qr = attn.q_norm(attn.wq_a(x))
    q = attn.wq_b(qr).view(t_len, h, d)
    q = q / q.square().mean(-1, keepdim=True).add(cfg.norm_eps).sqrt()
    q = apply_rope(q, cos[:, None], sin[:, None])
    kv = apply_rope(attn.kv_norm(attn.wkv(x)), cos, sin)
    entries = _reference_entries(attn.compressor, x, attn.freqs) if r else None
    if attn.indexer is not None:
        keys = _reference_entries(attn.indexer.compressor, x, attn.freqs)
        iq, iw = attn.indexer.queries(x, qr, cos, sin)
    out = torch.zeros(t_len, h, d)
    for t in range(t_len):
        chosen = [kv[s] for s in range(max(0, t - w + 1), t + 1)]
        if entries is not None:
            complete = list(range((t + 1) // r))
            if attn.indexer is not None:
                score = [float((torch.relu(iq[t] @ keys[j]) * iw[t]).sum()) for j in complete]
                # highest score first, ties to the older entry
                complete = sorted(complete, key=lambda j: (-score[j], j))[: cfg.index_topk]
            chosen += [entries[j] for j in complete]
        k = torch.stack(chosen)  # (K, D)
        logits = (q[t] @ k.T) * d**-0.5  # (H, K)
        denominator = logits.exp().sum(-1, keepdim=True) + attn.attn_sink.exp()[:, None]
        weights = logits.exp() / denominator
        out[t] = weights @ k
    out = apply_rope(out, cos[:, None], sin[:, None], inverse=True)
    groups = out.view(t_len, cfg.o_groups, -1)
    wo_a = attn.wo_a.weight.view(cfg.o_groups, cfg.o_lora_rank, -1)
    low = torch.stack([groups[:, g] @ wo_a[g].T for g in range(cfg.o_groups)], dim=1)
    return attn.wo_b(low.flatten(1))


@pytest.mark.parametrize(("ratio", "topk"), [(0, 3), (4, 3), (4, 100), (8, 3)],
                         ids=["window-only", "ratio4-top3", "ratio4-all", "ratio8"])
def test_attention_matches_the_per_query_reference_in_any_chunking(
    ratio: int, topk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attention_module, "QUERY_BLOCK", 5)  # several query blocks per chunk
    attn, cfg = _layer(ratio, topk)
    x = torch.randn(37, cfg.dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _reference_attention(attn, cfg, x)
        whole = attn(x, SeqState.new(cfg).layers[0], 0)
        st, parts = SeqState.new(cfg).layers[0], []
        for a, b in [(0, 3), (3, 4), (4, 16), (16, 17), (17, 37)]:
            parts.append(attn(x[a:b], st, a))
    torch.testing.assert_close(whole, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(parts), expected, atol=1e-4, rtol=1e-4)


def test_sink_only_adds_to_the_denominator() -> None:
    attn, cfg = _layer(0)
    x = torch.randn(6, cfg.dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        attn.attn_sink.fill_(-1e4)  # no sink: outputs are convex mixes of the values
        plain = attn(x, SeqState.new(cfg).layers[0], 0)
        attn.attn_sink.fill_(1e4)  # the sink takes all the mass: the output vanishes
        drowned = attn(x, SeqState.new(cfg).layers[0], 0)
    assert plain.abs().max() > 1e-2
    assert drowned.abs().max() < 1e-6


def test_compressor_pending_rows_carry_the_incomplete_block() -> None:
    attn, cfg = _layer(4)
    comp = attn.compressor
    x = torch.randn(8, cfg.dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cs = CompressorState.empty(4, cfg.head_dim)
        comp(x[:6], cs, 0, attn.freqs)
        assert cs.entries.n == 1 and cs.cur_kv.shape == (2, 2 * cfg.head_dim)
        torch.testing.assert_close(cs.cur_kv, comp.wkv(x[4:6]))
        assert cs.prev_kv is not None
        torch.testing.assert_close(cs.prev_kv, comp.wkv(x[0:4])[:, : cfg.head_dim])
        comp(x[6:8], cs, 6, attn.freqs)
        assert cs.entries.n == 2 and cs.cur_kv.shape[0] == 0
        torch.testing.assert_close(cs.entries.view(), _reference_entries(comp, x, attn.freqs))


def test_indexer_ties_go_to_the_oldest_entries() -> None:
    score = torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0, 0.0],
                          [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                          [3.0, float("-inf"), float("-inf"), 1.0, float("-inf"), 2.0]])
    picked = attention_module._top_k_oldest_first(score, 3)
    assert [sorted(row) for row in picked.tolist()] == [[0, 1, 4], [0, 1, 2], [0, 3, 5]]


def test_indexer_scores_taken_a_few_heads_at_a_time_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(4)
    q, w, keys = torch.randn(6, 8, 16, generator=g), torch.randn(6, 8, generator=g), torch.randn(
        30, 16, generator=g)
    expected = (torch.relu(torch.einsum("thd,nd->thn", q, keys)) * w[:, :, None]).sum(1)
    monkeypatch.setattr(attention_module, "SCORE_BUDGET", 6 * 30 * 3)  # 3 heads per pass
    torch.testing.assert_close(attention_module.Indexer.scores(q, w, keys), expected)
