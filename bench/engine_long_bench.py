"""The bundled engine at long context (issue 21 §2). One command:

    .venv/bin/python bench/engine_long_bench.py [--max 1048576] [--decode 16] [--threads 1]

For each context length of 8K, 32K, 128K, 512K and 1M tokens (up to ``--max``), a fresh process
runs the bundled engine (nano shape, random weights: speed and memory do not depend on what the
weights say) on a prompt of that many ids with a cold disk cache, then a second engine in the
same process restores the prompt from the snapshot and decodes again. Reported per length:

- prefill tokens/s (the engine's chunked prefill) and decode ms/token at that context;
- the sequence state in memory (``SeqState.nbytes``) and its snapshot on disk, with the time to
  write the request's snapshots and to restore one (read, verify, rebuild);
- peak RSS of the process (everything: weights, state, snapshot copies, temporaries);
- growth factors between neighbouring lengths, divided by the length ratio: 1.0 is linear,
  the length ratio itself would be quadratic.

The restored engine's tokens must equal the cold one's (checked). Each length runs in its own
process (with this one's niceness: run it under ``nice`` on a shared machine), so peak RSS is
that length's alone.
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
from whalebone.engine.bundled import BundledEngine

LENGTHS = (8192, 32768, 131072, 524288, 1048576)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(n: int, decode: int, cache: str) -> dict[str, Any]:
    window = n + decode + 8
    eng = BundledEngine.random("nano", seed=0, cache_dir=cache, progress=False,
                               context_window=window)
    keep = [v for v in eng.vocab.model_to_v4 if v > 2]
    ids = [0] + [keep[(i * 7919) % len(keep)] for i in range(n - 1)]
    rss_start = peak_rss()
    req = GenerationRequest(prompt_ids=ids, max_tokens=decode)
    cold = anyio.run(eng.generate, req)
    s = eng.last_stats
    assert eng.cache is not None
    disk = sum(f.stat().st_size for f in (Path(cache) / "snapshots").glob("*.safetensors"))
    state_bytes = _state_bytes(eng, s)
    warm_eng = BundledEngine.random("nano", seed=0, cache_dir=cache, progress=False,
                                    context_window=window)
    warm = anyio.run(warm_eng.generate, req)
    w = warm_eng.last_stats
    assert w.hit_tokens == n, (w.hit_tokens, n)
    assert warm.text == cold.text and w.completion_ids == s.completion_ids
    return {"tokens": n, "prefill_tok_s": n / s.prefill_s, "prefill_s": s.prefill_s,
            "decode_ms": s.decode_s / max(1, s.completion_tokens - 1) * 1000,
            "state_bytes": state_bytes, "disk_bytes": disk, "snapshots": len(s.snapshots),
            "snapshot_s": s.snapshot_s, "restore_s": w.restore_s, "peak_rss": peak_rss(),
            "rss_before_prefill": rss_start}


def _state_bytes(eng: BundledEngine, stats: Any) -> int:
    """The state after the prompt, as restored from its snapshot (nbytes of the real
    SeqState)."""
    from whalebone.engine.state import SeqState

    assert eng.cache is not None
    hit = eng.cache.lookup(stats.prompt_ids)
    assert hit is not None and hit.length == len(stats.prompt_ids)
    return SeqState.from_tensors(eng.cfg, hit.state).nbytes()


def spawn(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wb-long-") as cache:
        cmd = [sys.executable, __file__, "--child", str(n), "--cache", cache,
               "--decode", str(args.decode), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{n}-token process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=LENGTHS[-1], help="longest context to run")
    ap.add_argument("--decode", type=int, default=16, help="tokens decoded at each length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", type=int)
    ap.add_argument("--cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.decode, args.cache)))
        return
    print(f"bundled engine, nano shape, random weights, torch threads {args.threads}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print("| tokens | prefill tok/s | decode ms/tok | state MB | disk MB | snapshot write s "
          "(count) | restore s | peak RSS MB | growth: prefill time / state / RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    prev: dict[str, Any] | None = None
    for n in LENGTHS:
        if n > args.max:
            break
        r = spawn(n, args)
        growth = "-"
        if prev is not None:
            k = n / prev["tokens"]
            growth = (f"{r['prefill_s'] / prev['prefill_s'] / k:.2f} / "
                      f"{r['state_bytes'] / prev['state_bytes'] / k:.2f} / "
                      f"{r['peak_rss'] / prev['peak_rss'] / k:.2f}")
        mb = 1024 * 1024
        print(f"| {n:,} | {r['prefill_tok_s']:,.0f} | {r['decode_ms']:.1f} | "
              f"{r['state_bytes'] / mb:.1f} | {r['disk_bytes'] / mb:.1f} | "
              f"{r['snapshot_s']:.2f} ({r['snapshots']}) | {r['restore_s']:.2f} | "
              f"{r['peak_rss'] / mb:,.0f} | {growth} |", flush=True)
        prev = r
    print("growth: (ratio to the previous row) / (length ratio); 1.00 = linear")


if __name__ == "__main__":
    main()
