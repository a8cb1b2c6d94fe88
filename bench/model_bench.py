"""V4 model benchmarks on this CPU (the nano preset, random weights). One command:

    .venv/bin/python bench/model_bench.py [--tokens 32768] [--new 256] [--threads 1]

Measured side by side in one run:

1. a ``--tokens``-token prefill in one forward (``last_only``): seconds and tokens/s;
2. the path V4's release code lacks: ``--new`` tokens prefilled as one chunk on the state
   restored (through a safetensors file) at ``--tokens``, against re-prefilling everything
   (the cold prefill of section 1 stands in for it: it is shorter, so the ratio is a floor);
3. one-token decode at that context, ms/token, against the per-token cost of the prefill;
4. the state's size, and the save + restore time of its safetensors file.

Speed does not depend on what random weights say. ``--threads`` sets torch's intra-op threads
(1 by default: on a shared machine extra OpenMP threads spin against each other).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.state import SeqState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--decode", type=int, default=32, help="decode steps to time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default="nano")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Transformer(ModelConfig.preset(args.preset))
    gen = torch.Generator().manual_seed(0)
    n, new = args.tokens, args.new
    ids = torch.randint(0, model.cfg.vocab_size, (n + new + args.decode,), generator=gen)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {params / 1e6:.1f}M params, {args.threads} thread(s)")

    state = model.new_state()
    t0, c0 = time.perf_counter(), time.process_time()
    model.forward(ids[:n], state, last_only=True)
    cold, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"1. prefill {n} tokens in one forward: {cold:.1f} s wall ({n / cold:.0f} tok/s), "
          f"{cpu:.1f} s CPU (wall > CPU x threads means the machine is shared)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        t0 = time.perf_counter()
        save_file(state.to_tensors(), path)
        saved = time.perf_counter() - t0
        t0 = time.perf_counter()
        restored = SeqState.from_tensors(model.cfg, load_file(path))
        loaded = time.perf_counter() - t0
        size = path.stat().st_size
    t0 = time.perf_counter()
    model.forward(ids[n : n + new], restored, last_only=True)
    warm = time.perf_counter() - t0
    print(f"2. {new} new tokens as one chunk on the restored {n}-token state: {warm:.2f} s; "
          f"cold prefill of {n} tokens: {cold:.1f} s -> {cold / warm:.0f}x faster (a floor)")

    t0 = time.perf_counter()
    for i in range(args.decode):
        model.forward(ids[n + new + i : n + new + i + 1], restored)
    step = (time.perf_counter() - t0) / args.decode
    print(f"3. decode at {n + new} context: {step * 1e3:.1f} ms/token; prefill spends "
          f"{cold / n * 1e3:.2f} ms/token -> prefill is {step / (cold / n):.0f}x cheaper "
          f"per token than decoding one at a time")
    print(f"4. state at {n} tokens: {state.nbytes() / 1e6:.1f} MB in memory, "
          f"{size / 1e6:.1f} MB file; save {saved * 1e3:.0f} ms, restore {loaded * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
