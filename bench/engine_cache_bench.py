"""Prefix-cache hits of the bundled engine over whole conversations (issue 21 §1). One command:

    .venv/bin/python bench/engine_cache_bench.py [--turns 20] [--max-tokens 48] [--modes chat]

``whalebone serve``'s app runs the shipped nano checkpoint on a free 127.0.0.1 port with a cold
cache folder; a client holds a ``--turns``-turn conversation per mode through
``/v1/chat/completions`` (thinking off; on, as DeepSeek's API defaults, where each turn drops
the previous reasoning; on with a tool list, where reasoning is kept), sending back what the
server answered, as any OpenAI-style client does. Per turn it prints:

- ``hit``: ``prompt_cache_hit_tokens`` the server reported;
- ``limit``: every token the engine had already seen, byte-identical: the longest common prefix
  of this prompt's token ids with any earlier prompt + its sampled completion (EOS included);
- the snapshots written (count, state bytes, seconds) and the cache folder's size on disk.

Goal: hit >= limit - 1 on every turn. The engine is in this process so that the limit can be
read from the ids it really saw (``RequestStats``); the HTTP path is the real server's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import serving  # the tests' real-server helper

from whalebone.dsml.transcript import common_prefix_len
from whalebone.engine.runtime.bundled import BundledEngine

QUESTIONS = ["What is a prefix cache?", "Why does it save money?", "Give me an example.",
             "How long do entries live?", "What about tools?", "Summarise that.",
             "Is it the same on a laptop?", "And with a million tokens?"]
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                   "required": ["path"]}}}]
SYSTEM = "You are whalebone, a concise assistant. Answer in one or two sentences."


def folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def conversation(engine: BundledEngine, base: str, mode: str, turns: int,
                 max_tokens: int) -> list[dict[str, Any]]:
    assert engine.cache is not None
    seen: list[list[int]] = []
    messages: list[dict[str, Any]] = [{"role": "system", "content": f"{SYSTEM} ({mode})"}]
    rows = []
    with httpx.Client(base_url=base, timeout=600) as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]
                             + f" (turn {turn + 1})"})
            body: dict[str, Any] = {
                "model": engine.served_name, "messages": messages, "max_tokens": max_tokens,
                "thinking": {"type": "disabled" if mode == "chat" else "enabled"}}
            if mode == "thinking+tools":  # tools keep the reasoning: the prompt only grows
                body["tools"] = TOOLS
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            wall = time.perf_counter() - t0
            r.raise_for_status()
            reply = r.json()
            stats = engine.last_stats
            ids = stats.prompt_ids
            limit = max((common_prefix_len(ids, s) for s in seen), default=0)
            seen.append(ids + stats.completion_ids)
            msg = reply["choices"][0]["message"]
            messages.append({k: v for k, v in msg.items()
                             if k in ("role", "content", "reasoning_content") and v is not None})
            rows.append({"turn": turn + 1, "prompt": len(ids),
                         "hit": reply["usage"]["prompt_cache_hit_tokens"], "limit": limit,
                         "snapshots": len(stats.snapshots), "snap_bytes": stats.snapshot_bytes,
                         "snap_s": stats.snapshot_s, "wall_s": wall,
                         "disk": folder_bytes(engine.cache.root)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--modes", default="chat,thinking,thinking+tools")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"prefix-cache hits through whalebone serve (shipped nano, cold cache), "
          f"{args.turns} turns, max_tokens {args.max_tokens}, load avg {os.getloadavg()[0]:.1f}")
    worst = 0
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="wb-hits-") as tmp:
            engine = BundledEngine.default(cache_dir=Path(tmp) / "cache", progress=False)
            with serving(engine) as (base, _):
                rows = conversation(engine, base, mode, args.turns, args.max_tokens)
        print(f"\n{mode} mode")
        print(" turn prompt   hit limit short  snaps  snap KB  snap ms  disk KB")
        for r in rows:
            short = r["limit"] - r["hit"]
            worst = max(worst, short)
            print(f" {r['turn']:4d} {r['prompt']:6d} {r['hit']:5d} {r['limit']:5d} {short:5d} "
                  f"{r['snapshots']:6d} {r['snap_bytes'] / 1024:8.0f} {r['snap_s'] * 1000:8.1f} "
                  f"{r['disk'] / 1024:8.0f}")
        hits = sum(r["hit"] for r in rows)
        limit = sum(r["limit"] for r in rows)
        total = sum(r["prompt"] for r in rows)
        print(f" total: {hits} hit of {limit} possible ({hits / max(limit, 1):.1%}), "
              f"{total} prompt tokens; {sum(r['snap_s'] for r in rows) * 1000:.0f} ms writing "
              f"snapshots; {rows[-1]['disk'] / 1024:.0f} KB on disk after {len(rows)} turns")
    print(f"\nworst turn: {worst} token(s) short of the limit (goal <= 1)")


if __name__ == "__main__":
    main()
