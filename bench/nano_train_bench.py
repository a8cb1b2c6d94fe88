"""Training throughput of whalebone-nano: trained tokens/s, side by side in one run.

    python bench/nano_train_bench.py                 # one thread, 6 steps of 16 per variant
    python bench/nano_train_bench.py --steps 10 --batch 32 --json out.json

Each variant trains the same freshly initialised nano-shape model on the same real conversations
(rendered through the agent loop, a few per family, grouped by their shared head) for the same
steps; a step runs the head once without gradients, then forward + backward + AdamW over
``--batch`` conversations. Trained tokens are the conversations' tokens (the head excluded), as
the training log counts them. Variants:

- ``per-conversation``: each conversation its own forward from a copy of the head state (the
  engine's single-sequence forward with autograd, as training ran before);
- ``batched``: all of them in one right-padded forward (:mod:`whalebone.training.batch`), the
  indexer's top-k as a mask, the LM head only where there is a loss;
- ``batched, parts``: cut into length-sorted parts of at most 4,096 padded tokens (less
  padding, bounded memory), as ``python -m whalebone.training.train`` runs.

``--mtp`` adds the multi-token prediction block (``train --mtp 1``), each compared with
``batched, parts``: ``+ MTP, joint`` (trunk and block trained together, loss = trunk CE + 0.3
MTP CE) and ``+ MTP, frozen trunk`` (``--freeze-trunk``: only the block gets gradients).
``--only-batched`` leaves the slow per-conversation variant out (speedups are then against
``batched, parts``).

Variants alternate step by step so that load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from whalebone.engine.runtime.vocab import VocabMap
from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.training.batch import batch_loss, batch_losses, micro_batches, pad_batch, run_head
from whalebone.training.data import build
from whalebone.training.train import SHAPE, Encoded, build_vocab, make_trainable
from whalebone.training.train import train_forward as single_forward


def step_per_conversation(model: Transformer, head_ids: list[int],
                          convs: list[tuple[list[int], list[bool]]]) -> int:
    head = model.new_state()
    with torch.no_grad():
        single_forward(model, torch.tensor(head_ids), head)
    total, count = torch.zeros(()), 0
    for ids, mask in convs:
        x = torch.tensor(ids)
        logits = single_forward(model, x, head.clone())
        target = torch.tensor(mask[1:])
        total = total + F.cross_entropy(logits[:-1][target], x[1:][target], reduction="sum")
        count += int(target.sum())
    (total / count).backward()
    return sum(len(ids) for ids, _ in convs)


def step_batched(model: Transformer, head_ids: list[int],
                 convs: list[tuple[list[int], list[bool]]], max_tokens: int | None) -> int:
    head = model.new_state()
    with torch.no_grad():
        single_forward(model, torch.tensor(head_ids), head)
    count = sum(sum(m[1:]) for _, m in convs)
    for part in micro_batches(convs, max_tokens) if max_tokens else [convs]:
        ids, mask = pad_batch(part)
        loss, _ = batch_loss(model, head, ids, mask)
        (loss / count).backward()
    return sum(len(ids) for ids, _ in convs)


def step_mtp(model: Transformer, head_ids: list[int],
             convs: list[tuple[list[int], list[bool]]], max_tokens: int) -> int:
    """What ``train --mtp 1`` runs (the trunk frozen or not is the model's own setting)."""
    head, mtp_head = run_head(model, torch.tensor(head_ids))
    count = sum(sum(m[1:]) for _, m in convs)
    for part in micro_batches(convs, max_tokens):
        ids, mask = pad_batch(part)
        loss, mtp, _ = batch_losses(model, head, mtp_head, ids, mask)
        assert mtp is not None
        ((loss + 0.3 * mtp) / count).backward()
    return sum(len(ids) for ids, _ in convs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    p.add_argument("--batch", type=int, default=16, help="conversations per step")
    p.add_argument("--per-family", type=int, default=6, help="conversations rendered per family")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mtp", action="store_true", help="add the MTP variants")
    p.add_argument("--only-batched", action="store_true",
                   help="leave out the per-conversation variant")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    examples = build(args.per_family)
    cfg = ModelConfig.preset("nano").replace(**SHAPE)
    vocab: VocabMap = build_vocab(examples, cfg.vocab_size)
    cfg = cfg.replace(vocab_size=vocab.size)
    data = Encoded(examples, vocab)
    rng = random.Random(0)
    groups = sorted(data.groups)
    plan = []
    for _ in range(args.steps + 1):  # the first step of each variant warms up, untimed
        g = rng.choice(groups)
        convs = [(ids, mask) for ids, mask, _ in rng.choices(data.groups[g], k=args.batch)]
        plan.append((data.heads[g], convs))

    variants = {
        "per-conversation": lambda m, h, c: step_per_conversation(m, h, c),
        "batched": lambda m, h, c: step_batched(m, h, c, None),
        "batched, parts": lambda m, h, c: step_batched(m, h, c, 4096),
    }
    if args.only_batched:
        del variants["per-conversation"], variants["batched"]
    if args.mtp:
        variants["+ MTP, joint"] = variants["+ MTP, frozen trunk"] = (
            lambda m, h, c: step_mtp(m, h, c, 4096))
    models = {}
    for name in variants:
        model = Transformer(cfg.with_mtp(1) if "MTP" in name else cfg, seed=0)
        params, opt = make_trainable(model, tie=True, fresh=True, lr=1e-3,
                                     freeze_trunk="frozen" in name)
        models[name] = (model, params, opt)
    seconds = dict.fromkeys(variants, 0.0)
    tokens = dict.fromkeys(variants, 0)
    for i, (head_ids, convs) in enumerate(plan):
        for name, run in variants.items():
            model, params, opt = models[name]
            t0 = time.perf_counter()
            n = run(model, head_ids, convs)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:
                seconds[name] += time.perf_counter() - t0
                tokens[name] += n
    first = next(iter(variants))
    base = tokens[first] / seconds[first]
    rows = []
    print(f"{args.steps} steps x {args.batch} conversations, {args.threads} thread(s), "
          f"head {sum(len(h) for h, _ in plan) // len(plan)} tokens on average; x: vs {first}")
    for name in variants:
        rate = tokens[name] / seconds[name]
        rows.append({"variant": name, "tok_s": round(rate), "s_per_step":
                     round(seconds[name] / args.steps, 3), "speedup": round(rate / base, 2)})
        print(f"  {name:20s} {rate:7.0f} trained tok/s  {seconds[name] / args.steps:6.2f} s/step"
              f"  x{rate / base:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
