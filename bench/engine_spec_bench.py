"""Speculative decoding with the MTP block vs plain greedy decoding, side by side in one run:

    .venv/bin/python bench/engine_spec_bench.py [--checkpoint DIR] [--contexts 512,8192]
                                                [--new 128] [--rounds 3] [--threads 1]

For each context length, rounds alternate a plain greedy request and a speculative one (same
weights, same prompt, no prefix cache: each prefills in full, and prefill time is not counted)
and report the median decode tokens/s of each, the median of the rounds' ratios to plain, the
acceptance rate (drafts the trunk agreed with), tokens per trunk pass, and that all produced the
same tokens; the auto mode (the default: drafts only while its running means say it pays) is a
third side. Without ``--checkpoint`` the model is a random nano with one MTP layer: its drafts
are noise, so a fourth row forces every draft right (the ceiling: a perfect MTP block).

The profile line splits a decode step's time: the trunk's forwards, the MTP block's drafts, the
row-by-row LM head of a verify pass, sampling, and the rest (Python bookkeeping, detokenizing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import torch

from whalebone.engine.base import GenerationRequest, SamplingParams
from whalebone.engine.runtime.bundled import BundledEngine, RequestStats
from whalebone.engine.runtime.sampling import Sampler
from whalebone.engine.runtime.speculative import Drafter
from whalebone.engine.v4.model import Transformer

PARTS = ("trunk", "mtp", "head", "sample")


class Clock:
    """Seconds spent in each part of decoding, by wrapping the functions that do it; only
    inside decode steps (``BundledEngine._step``), so the prefill is not counted."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(PARTS, 0.0)
        self.on = False  # counting rounds
        self.decoding = False

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not (self.on and self.decoding):
                return fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[part] += time.perf_counter() - t0
        return timed

    @contextmanager
    def installed(self) -> Iterator[None]:
        saved = (Transformer.streams, Transformer.logits, Drafter.draft, Sampler.__call__)
        step = BundledEngine._step

        def decode_step(*args: Any) -> Any:
            self.decoding = True
            try:
                return step(*args)
            finally:
                self.decoding = False

        BundledEngine._step = decode_step  # type: ignore[method-assign]
        Transformer.streams = self.wrap("trunk", Transformer.streams)  # type: ignore[method-assign]
        Transformer.logits = self.wrap("head", Transformer.logits)  # type: ignore[method-assign]
        Drafter.draft = self.wrap("mtp", Drafter.draft)  # type: ignore[method-assign]
        Sampler.__call__ = self.wrap("sample", Sampler.__call__)  # type: ignore[method-assign]
        try:
            yield
        finally:
            (Transformer.streams, Transformer.logits, Drafter.draft,  # type: ignore[method-assign]
             Sampler.__call__) = saved
            BundledEngine._step = step  # type: ignore[method-assign]


def prompt_ids(engine: BundledEngine, n: int, checkpoint: bool) -> list[int]:
    """A chat prompt of about ``n`` tokens for a trained checkpoint: the repository's README as
    a user message, then a request to copy its last paragraph (a long answer, the kind of
    task the nano is trained on); spread ids for random weights."""
    if not checkpoint:
        keep = [v for v in engine.vocab.model_to_v4 if v > 2]
        return [0] + [keep[(i * 7919) % len(keep)] for i in range(n - 1)]
    from whalebone.dsml.encoder import encode_messages

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    body = engine.tokenizer.encode(readme)
    while len(body) < n:
        body = body + body
    ask = "\n\nCopy the paragraph above, word for word."

    def render(k: int) -> list[int]:
        text = engine.tokenizer.decode(body[:k]).rsplit("\n\n", 1)[0] + ask
        return engine.tokenizer.encode(encode_messages([{"role": "user", "content": text}],
                                                       "chat"))
    k = n
    while len(ids := render(k)) > n:
        k -= len(ids) - n
    return ids


def generate(engine: BundledEngine, ids: list[int], new: int) -> RequestStats:
    request = GenerationRequest(prompt_ids=ids, max_tokens=new,
                                sampling=SamplingParams(temperature=0.0))

    async def go() -> None:
        async for _ in engine.stream(request):
            pass

    anyio.run(go)
    return engine.last_stats


def forced(engine: BundledEngine, sequence: list[int]) -> Callable[..., int]:
    """Drafter.draft that runs the block but returns the right token (the ceiling row)."""
    real = Drafter.draft
    model_ids = engine.vocab.to_model(sequence)

    def draft(self: Drafter, next_ids: list[int]) -> int:
        at = self.state.pos + len(self.rows) + 1
        drafted = real(self, next_ids)
        return model_ids[at] if at < len(model_ids) else drafted
    return draft


def measure(engines: dict[str, BundledEngine], prompts: list[list[int]], new: int, rounds: int,
            ceiling: bool, label: str) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"plain": [], "spec": [], "auto": [], "ceiling": []}
    clocks = {k: Clock() for k in rates}
    last: dict[str, list[RequestStats]] = {}
    same = True
    for r in range(rounds + 1):  # round 0 warms up (allocations, caches), not counted
        sides = ["plain", "spec", "auto"] if r % 2 else ["auto", "spec", "plain"]
        for side in sides + ["ceiling"] * ceiling:  # the ceiling needs plain's transcript
            engine = engines["spec" if side == "ceiling" else side]
            clock, runs = clocks[side], []
            clock.on = r > 0
            for i, ids in enumerate(prompts):
                saved = Drafter.draft
                if side == "ceiling":
                    ref = last["plain"][i]
                    Drafter.draft = forced(engine, ref.prompt_ids + ref.completion_ids)  # type: ignore[method-assign]
                try:
                    with clock.installed():
                        runs.append(generate(engine, ids, new))
                finally:
                    Drafter.draft = saved  # type: ignore[method-assign]
            clock.on = False
            tokens = sum(s.completion_tokens for s in runs)
            seconds = sum(s.decode_s for s in runs)
            if r:
                rates[side].append(tokens / seconds)
                clock.spent["total"] = clock.spent.get("total", 0.0) + seconds
                clock.spent["tokens"] = clock.spent.get("tokens", 0.0) + tokens
            last[side] = runs
        same &= all([s.completion_ids for s in runs] == [p.completion_ids for p in last["plain"]]
                    for runs in last.values())
    out: dict[str, Any] = {"label": label, "new": new, "same_tokens": same}
    for side, values in rates.items():
        if not values:
            continue
        runs = last[side]
        tokens, passes = sum(s.completion_tokens for s in runs), sum(s.decode_passes for s in runs)
        row: dict[str, Any] = {"tok_s": statistics.median(values),
                               "tokens": tokens / len(runs), "passes": passes}
        if side != "plain":
            drafted = sum(s.drafted for s in runs)
            row["acceptance"] = sum(s.accepted for s in runs) / drafted if drafted else 0.0
            row["tokens_per_pass"] = tokens / max(1, passes)
            # the median of each round's ratio: a round's sides ran back to back, under the
            # same load, so the pairs cancel most of a shared machine's drift
            row["speedup"] = statistics.median(
                x / y for x, y in zip(values, rates["plain"], strict=True))
        spent = clocks[side].spent
        per_token = {p: 1e3 * spent[p] / spent["tokens"] for p in PARTS}
        per_token["rest"] = 1e3 * spent["total"] / spent["tokens"] - sum(per_token.values())
        row["ms_per_token"] = per_token
        out[side] = row
    return out


def task_prompts(engine: BundledEngine, n: int) -> list[list[int]]:
    """The start of ``n`` held-out agent conversations (one family after another), up to the
    first assistant turn: what the nano is trained to answer."""
    from whalebone.training.copyeval import FAMILIES, render_held_out

    examples = render_held_out(max(1, -(-n // len(FAMILIES))))
    out = []
    for ex in examples[:: max(1, len(examples) // n)][:n]:
        text = ex.head
        for piece, by_assistant in ex.pieces:
            if by_assistant:
                break
            text += piece
        out.append(engine.tokenizer.encode(text))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a checkpoint folder with an MTP block (n_mtp_layers 1)")
    ap.add_argument("--contexts", default="512,8192")
    ap.add_argument("--new", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=5,
                    help="with --checkpoint: also this many held-out agent tasks")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        spec = BundledEngine.from_checkpoint(args.checkpoint, use_cache=False, progress=False,
                                             speculative=True)
    else:
        spec = BundledEngine.random("nano", mtp=1, use_cache=False, progress=False,
                                    speculative=True)
    if not spec.speculative:
        raise SystemExit("this model has no MTP block: nothing to draft with")
    engines = {side: BundledEngine(spec.transformer, vocab=spec.vocab, progress=False,
                                   speculative=mode)
               for side, mode in (("plain", "off"), ("spec", "on"), ("auto", "auto"))}
    results = []
    for n in (int(c) for c in args.contexts.split(",")):
        ids = prompt_ids(spec, n, bool(args.checkpoint))
        results.append(measure(engines, [ids], args.new, args.rounds, not args.checkpoint,
                               f"context {len(ids)}"))
    if args.checkpoint and args.tasks:
        prompts = task_prompts(spec, args.tasks)
        label = (f"{len(prompts)} held-out agent tasks (context "
                 f"{min(map(len, prompts))}-{max(map(len, prompts))})")
        results.append(measure(engines, prompts, args.new, args.rounds, False, label))
    pace = str(engines["auto"].speculator.pace)
    if args.json:
        print(json.dumps({"results": results, "auto_pace": pace}))
        return
    name = args.checkpoint or "random nano + 1 MTP layer"
    print(f"{name}: greedy decode, {args.new} tokens per request, median of {args.rounds} "
          f"interleaved rounds, {args.threads} thread(s)")
    for res in results:
        p = res["plain"]
        print(f"\n{res['label']}: plain {p['tok_s']:.1f} tok/s ({p['tokens']:.0f} tokens "
              f"per request); same tokens: {res['same_tokens']}")
        for side in ("spec", "auto", "ceiling"):
            if side not in res:
                continue
            s = res[side]
            label = {"spec": "speculative (on)", "auto": "auto (drafts while it pays)",
                     "ceiling": "every draft right (ceiling)"}[side]
            print(f"  {label}: {s['tok_s']:.1f} tok/s = {s['speedup']:.2f}x plain; acceptance "
                  f"{100 * s['acceptance']:.1f}%, {s['tokens_per_pass']:.2f} tokens per trunk pass")
        for side in ("plain", "spec", "auto", "ceiling"):
            if side in res:
                parts = res[side]["ms_per_token"]
                print(f"  profile {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                      + " ms/token")
    print(f"\nauto's running means at the end: {pace}")


if __name__ == "__main__":
    main()
