"""Tools benchmarks. One command, ratios measured side by side in one run:

    .venv/bin/python bench/tools_bench.py [--files 400]

1. grep over a generated source tree (confined fd walk, regex with a time limit, capped
   output) vs GNU ``grep -rn`` on the same tree, same pattern: the price of confinement.
2. read_file of a 50,000-line file (first page, and a page from the middle) vs a plain
   ``open().readlines()`` slice.
3. A catastrophic pattern, ``(a|aa)+$`` on 40 characters: our grep's CPU time under its limit
   vs Python's ``re`` on a shorter line (the exponential growth it would show on ours).
4. Round trip of one tool call: a local tool through the registry vs the same tool on an MCP
   server over stdio and over streamable HTTP (calls per second each).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from whalebone.tools import FileTools, ToolRegistry
from whalebone.tools.confine import Root
from whalebone.tools.grep import grep_root

DEMO = Path(__file__).resolve().parents[1] / "tests" / "mcp_demo_server.py"


def best(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_tree(root: Path, files: int) -> None:
    body = "".join(f"def function_{i}(x):\n    return x * {i}  # note {i}\n\n" for i in range(60))
    for i in range(files):
        d = root / f"pkg{i % 20}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.py").write_text(body + ("# NEEDLE here\n" if i % 50 == 0 else ""))


def bench_grep(ws: Path) -> None:
    ft = FileTools(ws)
    ours = best(lambda: ft.grep("NEEDLE", max_results=1000))
    gnu = shutil.which("grep")
    hits = len(ft.grep("NEEDLE", max_results=1000).splitlines())
    if gnu is None:
        print(f"grep: ours {ours * 1e3:.1f} ms ({hits} hits); GNU grep not installed")
        return
    theirs = best(lambda: subprocess.run([gnu, "-rn", "NEEDLE", str(ws)], check=True,
                                         capture_output=True))
    print(f"grep, {hits} hits in the tree: ours {ours * 1e3:.1f} ms, GNU grep -rn "
          f"{theirs * 1e3:.1f} ms (ratio {ours / theirs:.1f}x, incl. its process start)")


def bench_read(ws: Path) -> None:
    big = ws / "big.txt"
    big.write_text("".join(f"line {i} of the big file, some text to read\n"
                           for i in range(50_000)))
    ft = FileTools(ws)
    first = best(lambda: ft.read_file("big.txt", limit=200))
    middle = best(lambda: ft.read_file("big.txt", offset=25_000, limit=200))

    def plain() -> list[str]:
        with open(big, encoding="utf-8") as f:
            return f.readlines()[25_000:25_200]

    base = best(plain)
    print(f"read_file 200 lines of 50,000: first page {first * 1e3:.1f} ms, middle page "
          f"{middle * 1e3:.1f} ms; open().readlines() slice {base * 1e3:.1f} ms "
          f"(ratio {middle / base:.1f}x)")


def bench_redos(ws: Path) -> None:
    (ws / "evil.txt").write_text("a" * 40 + "!\n")
    t0 = time.thread_time()
    out = grep_root(Root(ws), ("evil.txt",), r"(a|aa)+$", time_limit=1.0)
    ours = time.thread_time() - t0
    state = "stopped at its limit" if "stopped" in out else "finished"
    pattern = re.compile(r"(a|aa)+$")
    sizes = (22, 24, 26)
    timings = []
    for n in sizes:
        t0 = time.thread_time()
        pattern.search("a" * n + "!")
        timings.append(time.thread_time() - t0)
    per_char = (timings[-1] / max(timings[0], 1e-9)) ** (1 / (sizes[-1] - sizes[0]))
    at_40 = timings[-1] * per_char ** (40 - sizes[-1])
    shown = ", ".join(f"{t * 1e3:.0f} ms" for t in timings)
    print(f"(a|aa)+$ on 40 chars: our grep {ours:.2f} s CPU ({state}); Python re on "
          f"{'/'.join(map(str, sizes))} chars: {shown} (x{per_char:.2f} per char, so "
          f"~{at_40:.0f} s at 40 chars, and no way to stop it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _calls_per_second(registry: ToolRegistry, name: str, n: int) -> float:
    await registry.call(name, {"a": 1, "b": 2})  # warm
    t0 = time.perf_counter()
    for i in range(n):
        result = await registry.call(name, {"a": i, "b": 1})
        assert result.content == str(i + 1), result.content
    return n / (time.perf_counter() - t0)


async def bench_mcp(n: int) -> None:
    from whalebone.tools.mcp import McpTools

    local = ToolRegistry()

    @local.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rate_local = await _calls_per_second(local, "add", n)
    async with McpTools.stdio(sys.executable, [str(DEMO)], name="demo") as demo:
        rate_stdio = await _calls_per_second(ToolRegistry(demo.tools()), "demo__add", n)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(DEMO), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await anyio.sleep(0.1)
        async with McpTools.http(f"http://127.0.0.1:{port}/mcp", name="demo") as remote:
            rate_http = await _calls_per_second(ToolRegistry(remote.tools()), "demo__add", n)
    finally:
        proc.terminate()
        proc.wait()
    print(f"tool call round trip ({n} calls): local {rate_local:,.0f}/s, MCP stdio "
          f"{rate_stdio:,.0f}/s ({rate_local / rate_stdio:.0f}x slower), MCP HTTP "
          f"{rate_http:,.0f}/s ({rate_local / rate_http:.0f}x slower)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        make_tree(ws, args.files)
        bench_grep(ws)
        bench_read(ws)
        bench_redos(ws)
    try:
        import mcp  # noqa: F401
    except ImportError:
        print("MCP: the 'mcp' extra is not installed; skipped")
        return
    anyio.run(bench_mcp, args.calls)


if __name__ == "__main__":
    main()
