"""A prefill holds memory linear in its length: nothing builds a (tokens x entries) matrix, the
indexer's scores included (bench/engine_long_bench.py runs the same engine to 1M tokens)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import ctypes, sys, torch
    import whalebone.engine.v4.attention as attention
    from whalebone.engine.v4.config import ModelConfig
    from whalebone.engine.v4.model import Transformer

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    torch.set_num_threads(1)
    if sys.argv[2] == "unblocked":
        attention.QUERY_BLOCK = 1 << 30  # every query of the prefill in one block: quadratic
    model = Transformer(ModelConfig.preset("micro"))
    gen = torch.Generator().manual_seed(0)
    model.forward(torch.randint(3, 512, (256,), generator=gen), model.new_state())  # warm
    # Hand freed memory back (or the prefill would reuse it unseen), then restart the peak.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kib("VmRSS")
    n = int(sys.argv[1])
    model.forward(torch.randint(3, 512, (n,), generator=gen), model.new_state(), last_only=True)
    print(kib("VmHWM") - before)
""")


def peak_growth(n: int, mode: str = "blocked") -> int:
    """KiB the peak RSS of a fresh process rose by during one ``n``-token prefill (Linux)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), mode], capture_output=True,
                         text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def test_one_shot_prefill_peak_memory_grows_linearly_with_its_length() -> None:
    short, long = peak_growth(2048), peak_growth(8192)
    # 4x the tokens: at most ~4x the memory (measured 3.6x). With the query blocks switched off (the
    # child's "unblocked" mode: a (tokens x entries) score matrix) it measured 13x.
    assert long < 8 * short, (short, long)
