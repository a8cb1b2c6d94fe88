"""The bundled engine at long context (issue 21 §2). One command:

    nice .venv/bin/python bench/engine_long_bench.py [--max 1048576] [--full 32768] [--decode 16]

For each context length of 8K, 32K, 128K, 512K and 1M tokens (up to ``--max``), a fresh process
runs the bundled engine (nano shape, random weights: speed and memory do not depend on what the
weights say) through ``generate`` with a disk cache:

- at every length, the long context comes from the cache: a state of ``n - 1024`` tokens
  (random values of exactly the shapes a real prefill leaves) is stored as a snapshot, and the
  request restores it, prefills the last 1024 prompt tokens (prefill tok/s *at that context*:
  every query scores all the indexer keys before it), decodes ``--decode`` tokens (ms/token)
  and writes its snapshots. A cold prefill of 1M tokens costs O(n^2/8) indexer dot products
  (each query scores every earlier block), hours on a 2-core machine; the tail chunk measures
  the same code at the same sizes in seconds;
- up to ``--full`` tokens, also a real cold prefill from token 0 (its tok/s), then a second
  engine restoring it: its tokens must equal the cold ones (checked).

Reported: the state in memory (``SeqState.nbytes``) and the request's snapshots on disk, the
snapshot write and restore times, peak RSS of the process (weights, state, snapshot copies,
temporaries) and growth factors between neighbouring lengths divided by the length ratio
(1.00 = linear; the length ratio itself would be quadratic). Each length runs in its own
process (with this one's niceness), so peak RSS is that length's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import torch

from whalebone.engine.base import GenerationRequest
from whalebone.engine.runtime.bundled import BundledEngine

LENGTHS = (8192, 32768, 131072, 524288, 1048576)
TAIL = 1024  # prompt tokens prefilled after the restored context


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def engine_and_ids(n: int, decode: int, cache: str) -> tuple[BundledEngine, list[int]]:
    eng = BundledEngine.random("nano", seed=0, cache_dir=cache, progress=False,
                               context_window=n + decode + 8)
    keep = [v for v in eng.vocab.model_to_v4 if v > 2]
    return eng, [0] + [keep[(i * 7919) % len(keep)] for i in range(n - 1)]


def synthetic_state(eng: BundledEngine, pos: int) -> dict[str, torch.Tensor]:
    """A state of ``pos`` tokens with random values in every tensor a real one holds."""
    from whalebone.engine.v4.state import SeqState, _expected_shapes

    gen = torch.Generator().manual_seed(pos)
    tensors = {name: torch.randn(shape, generator=gen)
               for name, shape in _expected_shapes(eng.cfg, pos).items()}
    tensors["pos"] = torch.tensor([pos], dtype=torch.int64)
    SeqState.from_tensors(eng.cfg, tensors)  # the engine will accept it
    return tensors


def tail_child(n: int, decode: int, cache: str) -> dict[str, Any]:
    eng, ids = engine_and_ids(n, decode, cache)
    assert eng.cache is not None
    eng.cache.store(ids[: n - TAIL], synthetic_state(eng, n - TAIL),
                    torch.zeros(eng.cfg.vocab_size))
    seeded = {f.name for f in (Path(cache) / "snapshots").glob("*.safetensors")}
    rss_start = peak_rss()
    anyio.run(eng.generate, GenerationRequest(prompt_ids=ids, max_tokens=decode))
    s = eng.last_stats
    assert s.hit_tokens == n - TAIL, (s.hit_tokens, n)
    written = [f for f in (Path(cache) / "snapshots").glob("*.safetensors")
               if f.name not in seeded]
    return {"tokens": n, "tail_tok_s": TAIL / s.prefill_s,
            "decode_ms": s.decode_s / max(1, s.completion_tokens - 1) * 1000,
            "state_bytes": _state_bytes(eng, ids), "disk_bytes": sum(
                f.stat().st_size for f in written), "snapshots": len(s.snapshots),
            "snapshot_s": s.snapshot_s, "restore_s": s.restore_s, "peak_rss": peak_rss(),
            "rss_before": rss_start}


def full_child(n: int, decode: int, cache: str) -> dict[str, Any]:
    eng, ids = engine_and_ids(n, decode, cache)
    req = GenerationRequest(prompt_ids=ids, max_tokens=decode)
    cold = anyio.run(eng.generate, req)
    s = eng.last_stats
    warm_eng, _ = engine_and_ids(n, decode, cache)
    warm = anyio.run(warm_eng.generate, req)
    w = warm_eng.last_stats
    assert w.hit_tokens == n, (w.hit_tokens, n)
    assert warm.text == cold.text and w.completion_ids == s.completion_ids
    return {"tokens": n, "full_tok_s": n / s.prefill_s, "full_s": s.prefill_s,
            "peak_rss_full": peak_rss()}


def _state_bytes(eng: BundledEngine, ids: list[int]) -> int:
    """The state after the prompt, as restored from its snapshot (nbytes of the real
    SeqState)."""
    from whalebone.engine.v4.state import SeqState

    assert eng.cache is not None
    hit = eng.cache.lookup(ids)
    assert hit is not None and hit.length == len(ids)
    return SeqState.from_tensors(eng.cfg, hit.state).nbytes()


def spawn(n: int, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wb-long-") as cache:
        cmd = [sys.executable, __file__, "--child", str(n), "--mode", mode, "--cache", cache,
               "--decode", str(args.decode), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{n}-token {mode} process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=LENGTHS[-1], help="longest context to run")
    ap.add_argument("--full", type=int, default=32768,
                    help="longest context also prefilled cold from token 0")
    ap.add_argument("--decode", type=int, default=16, help="tokens decoded at each length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", type=int)
    ap.add_argument("--mode", choices=["tail", "full"], default="tail")
    ap.add_argument("--cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        run = tail_child if args.mode == "tail" else full_child
        print(json.dumps(run(args.child, args.decode, args.cache)))
        return
    print(f"bundled engine, nano shape, random weights, torch threads {args.threads}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"| tokens | cold prefill from 0, tok/s | prefill tok/s of {TAIL} more | "
          "decode ms/tok | state MB | snapshots MB on disk (count) | snapshot write s | "
          "restore s | peak RSS MB | growth: state / RSS / decode |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    prev: dict[str, Any] | None = None
    mb = 1024 * 1024
    for n in LENGTHS:
        if n > args.max:
            break
        r = spawn(n, args, "tail")
        full = f"{spawn(n, args, 'full')['full_tok_s']:,.0f}" if n <= args.full else "-"
        growth = "-"
        if prev is not None:
            k = n / prev["tokens"]
            growth = " / ".join(f"{r[key] / prev[key] / k:.2f}" for key in (
                "state_bytes", "peak_rss", "decode_ms"))
        print(f"| {n:,} | {full} | {r['tail_tok_s']:,.0f} | {r['decode_ms']:.1f} | "
              f"{r['state_bytes'] / mb:.1f} | {r['disk_bytes'] / mb:.1f} ({r['snapshots']}) | "
              f"{r['snapshot_s']:.2f} | {r['restore_s']:.2f} | {r['peak_rss'] / mb:,.0f} | "
              f"{growth} |", flush=True)
        prev = r
    print("growth: (ratio to the previous row) / (length ratio); 1.00 = linear, below 1 = "
          "sublinear (fixed costs dominate)")


if __name__ == "__main__":
    main()
