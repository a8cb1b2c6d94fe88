"""Agent loop benchmark: runtime overhead per turn, and the prompt-cache hit rate of a session.

    .venv/bin/python bench/agent_bench.py [--turns 1000] [--bundled]

1. Overhead per turn, excluding the model: one session of ``--turns`` tool-calling turns on an
   engine that answers instantly; per step, the wall time between two steps minus the time spent
   inside the engine's stream and inside the tool. It covers rendering, parsing, the token
   estimate, the session commits (message, journal, usage), events and loop detection. Reported
   as the median of the ten steps ending at turn 10, 100 and 1000 (goal: <= 2 ms and flat).
2. Cache hit rate of a 50-turn tool session (real file tools on a temporary workspace) on
   ScriptedEngine: real tokenizer, prefix hits counted as the bundled engine's cache counts them
   (goal: >= 98% of prompt tokens).
3. With ``--bundled``: the same 50 rendered prompts sent to the bundled engine (random weights,
   ``nano`` preset, its disk prefix cache in a temporary folder) with max_tokens=1, and the hit
   rate its prefix cache reports. It completes one token, not the scripted completion, so each
   prompt can reuse at most the previous prompt: its rate is bounded below the scripted one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.events import StepStarted, ToolFinished, UsageReport
from whalebone.dsml import emit_completion
from whalebone.engine.base import Engine, Finished, GenerationRequest, StreamEvent, TextDelta, Usage
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.registry import ToolRegistry


class InstantEngine(Engine):
    """Answers at once with a fresh tool call per turn; counts tokens as 4 characters."""

    name = "instant"
    model = "whalebone-local"

    def __init__(self) -> None:
        self.turn = 0
        self.last = 0

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        self.turn += 1
        text = emit_completion("", reasoning=f"Step {self.turn}.",
                               tool_calls=[("note", {"text": f"note {self.turn}"})], eos=False)
        for i in range(0, len(text), 40):
            yield TextDelta(text=text[i:i + 40])
        prompt = len(request.prompt or "") // 4
        hits, self.last = min(self.last, prompt), prompt + len(text) // 4
        yield Finished(finish_reason="stop", text=text, engine=self.name, model=self.model,
                       usage=Usage(prompt_tokens=prompt, prompt_cache_hit_tokens=hits,
                                   prompt_cache_miss_tokens=prompt - hits,
                                   completion_tokens=len(text) // 4))


def overhead(turns: int, store: Path) -> dict[int, tuple[float, float]]:
    """Per turn: (wall ms, CPU ms) medians of the ten steps ending at turn 10, 100, 1000."""
    tools = ToolRegistry()

    @tools.tool
    async def note(text: str) -> str:
        """Take a note."""
        return f"noted: {text}"

    agent = Agent(InstantEngine(), tools=tools, store=store,
                  config=AgentConfig(max_steps=turns, loop_limit=turns + 1, date_in_task=False))
    wall: list[float] = []
    cpu: list[float] = []

    async def main() -> None:
        start, cstart = time.perf_counter(), time.process_time()
        excluded = 0.0  # the engine's and the tool's share of the step
        async for event in agent.stream("take notes"):
            if isinstance(event, StepStarted):
                now, cnow = time.perf_counter(), time.process_time()
                if event.step > 1:
                    wall.append(now - start - excluded)
                    cpu.append(cnow - cstart - excluded)
                start, cstart, excluded = now, cnow, 0.0
            elif isinstance(event, UsageReport):
                excluded += event.engine_seconds
            elif isinstance(event, ToolFinished):
                excluded += event.seconds

    anyio.run(main)
    return {k: (statistics.median(wall[k - 10:k]) * 1e3, statistics.median(cpu[k - 10:k]) * 1e3)
            for k in (10, 100, 1000) if k <= len(wall)}


def hit_rate_session(root: Path, *, warm: bool, turns: int = 50) -> tuple[float, list[str]]:
    """The hit rate of a ``turns``-turn session of file reads. ``warm``: the engine served one
    earlier session of the same agent, so the system prompt and tool list (byte-identical from
    session to session) are already in its cache, as on any engine that is not brand new."""
    from whalebone.agent.tools import default_tools

    ws = root / f"ws-{warm}"
    ws.mkdir()
    for i in range(turns):
        (ws / f"file{i}.txt").write_text(f"line {i}\n" * (5 + i % 7))
    script = [emit_completion("", reasoning=f"Read file {i}.",
                              tool_calls=[("read_file", {"path": f"file{i}.txt"})])
              for i in range(turns - 1)] + [emit_completion("Read them all.", reasoning="Done.")]
    if warm:
        script.insert(0, emit_completion("Hello.", reasoning="A greeting."))
    engine = ScriptedEngine(script)
    agent = Agent(engine, tools=default_tools(ws, shell=False, web=False),
                  store=root / f"hits-{warm}.db", config=AgentConfig(max_steps=turns + 1))
    if warm:
        agent.run_sync("hello")
        engine.requests.clear()
    prompt = hits = 0

    async def main() -> None:
        nonlocal prompt, hits
        async for event in agent.stream("read every file in the workspace"):
            if isinstance(event, UsageReport):
                prompt += event.prompt_tokens
                hits += event.cache_hit_tokens

    anyio.run(main)
    return hits / prompt, [r.prompt or "" for r in engine.requests]


def bundled_hit_rate(prompts: list[str], root: Path) -> float:
    from whalebone.engine.runtime.bundled import BundledEngine

    engine = BundledEngine.random("nano", cache_dir=root / "prefix-cache")
    prompt = hits = 0

    async def main() -> None:
        nonlocal prompt, hits
        for p in prompts:
            done = await engine.generate(GenerationRequest(prompt=p, max_tokens=1))
            prompt += done.usage.prompt_tokens
            hits += done.usage.prompt_cache_hit_tokens

    anyio.run(main)
    return hits / prompt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--bundled", action="store_true", help="also measure the bundled engine")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        medians = overhead(args.turns + 1, root / "overhead.db")
        print("runtime overhead per turn, excluding the model (median of the 10 steps ending "
              "at the turn; CPU time is the process's own, immune to a busy machine):")
        for k, (ms, cpu_ms) in medians.items():
            print(f"  turn {k:>5}: {ms:6.3f} ms wall, {cpu_ms:6.3f} ms CPU")
        if len(medians) > 1:
            first, last = medians[min(medians)], medians[max(medians)]
            print(f"  turn {max(medians)} / turn {min(medians)}: {last[0] / first[0]:.2f}x wall, "
                  f"{last[1] / first[1]:.2f}x CPU")
        print("cache hit rate, 50-turn tool session (read_file), ScriptedEngine:")
        cold, prompts = hit_rate_session(root, warm=False)
        print(f"  first session on a fresh engine: {cold:.2%} of prompt tokens")
        warm, _ = hit_rate_session(root, warm=True)
        print(f"  a later session (system prompt + tools cached): {warm:.2%} of prompt tokens")
        if args.bundled:
            b = bundled_hit_rate(prompts, root)
            print(f"  the first session's 50 prompts on the bundled engine (nano, random weights, "
                  f"max_tokens=1): {b:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
