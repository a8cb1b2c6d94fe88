"""Codec benchmarks (issue: the V4 prompt codec). One command, ratios side by side:

    .venv/bin/python bench/dsml_bench.py [--turns 1000]

1. A tool-using agent session rendered turn by turn: the incremental Transcript vs re-encoding
   the whole conversation every turn (what a naive loop does), at 100, 500 and 1000 turns,
   with the bytes checked identical. Goal: >= 100x at 1000 turns.
2. One-shot parse throughput (MB/s) of a long completion with tool calls.
3. Streaming overhead: microseconds per token-sized delta (3 characters, the size DeepSeek's
   API streams) over the one-shot cost of the same text. Goal: <= 5 us.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

from whalebone.dsml.emit import emit_completion
from whalebone.dsml.encoder import encode_messages
from whalebone.dsml.parser import CompletionParser, parse_completion
from whalebone.dsml.transcript import Transcript

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file from the workspace.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"},
                                                    "limit": {"type": "integer"}},
                   "required": ["path"]}}}]


def session(turns: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful coding agent. " * 20, "tools": TOOLS},
        {"role": "user", "content": "Find the bug in the parser and fix it."},
    ]
    for i in range(turns):
        msgs.append({
            "role": "assistant", "content": "",
            "reasoning_content": f"Step {i}: I should look at the next file to see how the "
                                 "scanner handles partial markers at chunk boundaries.",
            "tool_calls": [{"id": f"call_{i}", "type": "function", "function": {
                "name": "read_file",
                "arguments": json.dumps({"path": f"src/module_{i}.py", "limit": 200})}}],
        })
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}",
                     "content": f"def f_{i}(x):\n    return x + {i}\n" * 8})
    return msgs


def bench_render(turns: int) -> None:
    msgs = session(turns)
    checkpoints = sorted({t for t in (100, 500, 1000, turns) if t <= turns})
    # Each turn appends an assistant message and its tool result, then renders the prompt.
    # The two ways run as separate passes so that neither pays for the other's garbage.
    gc.collect()
    transcript = Transcript("thinking")
    transcript.append(*msgs[:2])
    transcript.render()
    incremental: dict[int, float] = {}
    texts: dict[int, str] = {}
    elapsed = 0.0
    for t in range(1, turns + 1):
        t0 = time.perf_counter()
        transcript.append(*msgs[2 * t: 2 * t + 2])
        render = transcript.render()
        elapsed += time.perf_counter() - t0
        assert render.prefix_break is None
        if t in checkpoints:
            incremental[t], texts[t] = elapsed, transcript.text
    gc.collect()
    naive: dict[int, float] = {}
    elapsed = 0.0
    for t in range(1, turns + 1):
        t0 = time.perf_counter()
        full = encode_messages(msgs[: 2 + 2 * t], "thinking")
        elapsed += time.perf_counter() - t0
        if t in checkpoints:
            naive[t] = elapsed
            assert full == texts[t], "incremental and full renderings differ"
    print(f"{'turns':>6} {'prompt chars':>13} {'incremental ms':>15} {'full re-encode ms':>18} "
          f"{'ratio':>7}  bytes")
    for t in checkpoints:
        print(f"{t:>6} {len(texts[t]):>13,} {incremental[t] * 1e3:>15.1f} "
              f"{naive[t] * 1e3:>18.1f} {naive[t] / incremental[t]:>6.0f}x  identical")


def completion(n_calls: int) -> str:
    calls = [("read_file", {"path": f"src/module_{i}.py", "limit": i}) for i in range(n_calls)]
    return emit_completion("Here is what I found. " * 50, reasoning="Let me think. " * 400,
                           tool_calls=calls)


def bench_parse() -> None:
    text = completion(200)
    mb = len(text.encode()) / 1e6
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        parse_completion(text, "thinking", tools=TOOLS)
    one_shot = (time.perf_counter() - t0) / reps
    print(f"\none-shot parse: {len(text):,} chars ({mb:.2f} MB) in {one_shot * 1e3:.1f} ms "
          f"= {mb / one_shot:.1f} MB/s")

    deltas = [text[i:i + 3] for i in range(0, len(text), 3)]
    t0 = time.perf_counter()
    for _ in range(3):
        parser = CompletionParser("thinking", tools=TOOLS)
        for d in deltas:
            parser.feed(d)
        parser.close()
    streamed = (time.perf_counter() - t0) / 3
    per_delta = (streamed - one_shot) / len(deltas) * 1e6
    print(f"streaming: {len(deltas):,} deltas of 3 chars in {streamed * 1e3:.1f} ms = "
          f"{streamed / len(deltas) * 1e6:.2f} us/delta total, "
          f"{per_delta:.2f} us/delta over one-shot (goal <= 5 us)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1000)
    args = ap.parse_args()
    bench_render(args.turns)
    bench_parse()


if __name__ == "__main__":
    main()
