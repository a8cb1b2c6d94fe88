"""Bundled-engine benchmarks (issue 3). One command, ratios measured side by side in one run:

    .venv/bin/python bench/engine_bench.py [--tokens 32768] [--new 64] [--threads 1]

1. KV bytes per token at ``--tokens`` tokens, read from the real ``SeqState`` after a real
   prefill: the nano, and the Flash layer mix (a model with Flash's KV shapes: 512-d KV, 128-d
   indexer keys, 128-slot window, one layer of each ratio 0/4/128 over a small trunk, summed
   over Flash's 43-layer mix), each against dense GQA layers of the same count (8 KV heads x
   128, K and V, same dtype). Goal: >= 10x smaller.
2. Time to first token for a ``--tokens``-token prompt: a cold prefill in a fresh process vs a
   NEW process that restores the prefix from the disk cache and prefills ``--new`` new tokens.
   Goal: >= 20x faster.
3. The nano's prefill and decode tokens/s on this CPU (decode at a short and at the long
   context).
4. Decode tokens/s (forward passes per CPU second) at 512 tokens of context with the one-token
   fast paths off (the torch path every token took before issue 21) and on, alternating
   rounds in one process.

Random weights: speed and memory do not depend on what the weights say. ``--threads`` sets
torch's intra-op threads in every process (1 by default: on a shared, busy machine two OpenMP
threads spin against each other and the numbers become noise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio
import torch

from whalebone.engine.base import GenerationRequest
from whalebone.engine.runtime.bundled import BundledEngine
from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer

DENSE_VALUES = 2 * 8 * 128  # K and V, 8 KV heads x 128 dims, per token per layer
FLASH = ModelConfig.preset("flash")


def prompt_ids(engine: BundledEngine, n: int, salt: int = 0) -> list[int]:
    """``n`` V4 ids the engine's vocabulary keeps, BOS first (nothing maps to <unk>)."""
    keep = [v for v in engine.vocab.model_to_v4 if v > 2]
    return [0] + [keep[(i * 7919 + salt * 104729) % len(keep)] for i in range(n - 1)]


def prefill_state(model: Transformer, n: int, chunk: int = 1024) -> Any:
    state = model.new_state()
    gen = torch.Generator().manual_seed(0)
    for lo in range(0, n, chunk):
        ids = torch.randint(3, model.cfg.vocab_size, (min(chunk, n - lo),), generator=gen)
        model.forward(ids, state, last_only=True)
    return state


def per_layer_values(state: Any, n: int) -> list[float]:
    """Stored values per token of each layer at length ``n`` (fixed window included)."""
    out = []
    for layer in state.layers:
        total = layer.window.numel()
        for cs in (layer.compressor, layer.indexer):
            if cs is not None:
                total += sum(t.numel() for t in cs.tensors().values())
        out.append(total / n)
    return out


def kv_bytes(n: int) -> list[dict[str, Any]]:
    rows = []
    nano_cfg = ModelConfig.preset("nano")
    state = prefill_state(Transformer(nano_cfg), n)
    elem = state.layers[0].window.element_size()
    nano = state.nbytes() / n
    dense = nano_cfg.n_layers * DENSE_VALUES * elem
    rows.append({"model": f"nano ({nano_cfg.n_layers} layers, ratios "
                 f"{list(nano_cfg.compress_ratios[:nano_cfg.n_layers])})",
                 "bytes_per_token": nano, "dense_gqa_bytes_per_token": dense,
                 "ratio": dense / nano})
    # Flash's KV shapes on a small trunk: one layer per ratio, measured, then Flash's mix.
    flash_kv = nano_cfg.replace(
        head_dim=FLASH.head_dim, rope_head_dim=FLASH.rope_head_dim,
        index_head_dim=FLASH.index_head_dim, window_size=FLASH.window_size,
        index_topk=FLASH.index_topk, n_layers=3, compress_ratios=(0, 4, 128), n_hash_layers=0)
    per = per_layer_values(prefill_state(Transformer(flash_kv), n), n)
    by_ratio = dict(zip((0, 4, 128), per, strict=True))
    mix = list(FLASH.compress_ratios[:FLASH.n_layers])
    flash = sum(by_ratio[r] for r in mix) * elem
    dense = len(mix) * DENSE_VALUES * elem
    rows.append({"model": f"Flash mix ({len(mix)} layers: {mix.count(0)}x ratio 0, "
                 f"{mix.count(4)}x ratio 4, {mix.count(128)}x ratio 128)",
                 "bytes_per_token": flash, "dense_gqa_bytes_per_token": dense,
                 "ratio": dense / flash,
                 "per_layer_values_per_token": {str(k): round(v, 2) for k, v in by_ratio.items()}})
    return rows


# -- time to first token, each side in its own fresh process ---------------------------------


def child(mode: str, cache: str, n: int, new: int, decode: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    eng = BundledEngine.random("nano", seed=0, cache_dir=cache, progress=False)
    load_s = time.perf_counter() - t0
    ids = prompt_ids(eng, n)
    if mode == "warm":
        ids = ids + prompt_ids(eng, new + 1, salt=1)[1:]
    wall = time.perf_counter()
    fin = anyio.run(eng.generate, GenerationRequest(prompt_ids=ids, max_tokens=decode))
    wall = time.perf_counter() - wall
    s = eng.last_stats
    return {"mode": mode, "prompt": len(ids), "hit": fin.usage.prompt_cache_hit_tokens,
            "ttft_s": s.first_token_s, "restore_s": s.restore_s, "prefill_s": s.prefill_s,
            "decode_tok_s": (s.completion_tokens - 1) / s.decode_s if s.decode_s else 0.0,
            "snapshot_s": s.snapshot_s, "snapshots": s.snapshots, "wall_s": wall,
            "engine_load_s": load_s}


def spawn(args: argparse.Namespace, mode: str, cache: str, decode: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--cache", cache, "--tokens",
           str(args.tokens), "--new", str(args.new), "--decode", str(decode),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} process failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode", type=int, default=33, help="tokens generated per side")
    ap.add_argument("--child", choices=["cold", "warm"])
    ap.add_argument("--cache")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.cache, args.tokens, args.new, args.decode)))
        return

    report: dict[str, Any] = {"threads": args.threads, "cpus": os.cpu_count(),
                              "load_avg": os.getloadavg(), "tokens": args.tokens}
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as cache:
        cold = spawn(args, "cold", cache, args.decode)
        warm = spawn(args, "warm", cache, args.decode)
    report["ttft"] = {"cold": cold, "warm": warm, "speedup": cold["ttft_s"] / warm["ttft_s"]}
    report["nano_speed"] = {"prefill_tok_s": args.tokens / cold["prefill_s"],
                            "decode_tok_s_at_long_context": warm["decode_tok_s"]}
    report["nano_speed"]["decode_tok_s_at_short_context"] = short_decode(args.threads)
    report["kv_bytes"] = kv_bytes(args.tokens)
    report["decode_before_after"] = decode_before_after()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"bundled engine benchmark: {args.tokens}-token prompt, torch threads {args.threads}, "
          f"{report['cpus']} CPUs, load avg {report['load_avg'][0]:.1f}")
    print("\n1. KV bytes per token at", args.tokens, "tokens (real SeqState, fp32)")
    for row in report["kv_bytes"]:
        print(f"   {row['model']}: {row['bytes_per_token']:.0f} B/token vs dense GQA "
              f"{row['dense_gqa_bytes_per_token']:.0f} B/token -> {row['ratio']:.1f}x smaller "
              f"(goal >= 10x)")
    print(f"\n2. Time to first token, {args.tokens}-token prompt, fresh process each side")
    print(f"   cold prefill:                  {cold['ttft_s']:8.3f} s")
    print(f"   restored from disk (+{args.new} new): {warm['ttft_s']:8.3f} s "
          f"(restore {warm['restore_s']:.3f} s, prefill {warm['prefill_s']:.3f} s, "
          f"hit {warm['hit']}/{warm['prompt']})")
    print(f"   speedup: {report['ttft']['speedup']:.1f}x (goal >= 20x); snapshots written after "
          f"the cold request: {cold['snapshots']} in {cold['snapshot_s']:.3f} s")
    sp = report["nano_speed"]
    print("\n3. nano on this CPU")
    print(f"   prefill: {sp['prefill_tok_s']:.0f} tok/s ({args.tokens} tokens)")
    print(f"   decode:  {sp['decode_tok_s_at_short_context']:.1f} tok/s at 512 tokens of "
          f"context, {sp['decode_tok_s_at_long_context']:.1f} tok/s at {args.tokens}")
    ba = report["decode_before_after"]
    print("\n4. nano decode steps per CPU second at 512 tokens of context, fast paths off vs on")
    print(f"   before: {ba['before']:.1f} tok/s   after: {ba['after']:.1f} tok/s   "
          f"(best of each {ba['after'] / ba['before']:.2f}x, median paired round "
          f"{ba['median_ratio']:.2f}x)")


def decode_before_after(rounds: int = 5, steps: int = 64) -> dict[str, float]:
    """Nano decode steps at 512 tokens of context with ``layers.FAST_DECODE`` off and on in
    alternating rounds, timed in CPU seconds of this process (wall time on a shared machine
    is mostly waiting for a core): tok/s of the best round of each, and the median of the
    rounds' after/before ratios."""
    import statistics

    from whalebone.engine.v4 import layers
    model = Transformer(ModelConfig.preset("nano"))
    prefix = prefill_state(model, 512)
    token = torch.tensor([5])
    before: list[float] = []
    after: list[float] = []
    try:
        for _ in range(rounds):
            for fast, out in ((False, before), (True, after)):
                layers.FAST_DECODE = fast
                state = prefix.clone()
                t0 = time.process_time()
                for _ in range(steps):
                    model.forward(token, state)
                out.append(steps / (time.process_time() - t0))
    finally:
        layers.FAST_DECODE = True
    return {"before": max(before), "after": max(after),
            "median_ratio": statistics.median(a / b for a, b in zip(after, before, strict=True))}


def short_decode(threads: int) -> float:
    eng = BundledEngine.random("nano", seed=0, use_cache=False, progress=False)
    req = GenerationRequest(prompt_ids=prompt_ids(eng, 512), max_tokens=65)
    anyio.run(eng.generate, req)
    s = eng.last_stats
    return (s.completion_tokens - 1) / s.decode_s


if __name__ == "__main__":
    main()
