"""Train whalebone-nano: ``python -m whalebone.training.train --out DIR --minutes N``.

One command, fixed seeds: render the training conversations (:mod:`.data`), build the pruned
vocabulary from them, train a V4-architecture model (:class:`whalebone.engine.v4.model.Transformer`,
the ``nano`` preset by default) with the loss on assistant tokens only, and write a checkpoint
folder the bundled engine loads: ``config.json``, ``model.safetensors`` (BF16), ``vocab.json``,
``MODEL_CARD.md`` and ``train_log.json``. A checkpoint is also written every ``--save-every``
minutes, so a run cut short still leaves one.

Each step takes one group of examples sharing a head (the system prompt and tool list: the agent
with the built-in tools and calculator, the agent with memory, or the budget auditor), runs the
head once without gradients, and continues ``--batch`` examples from copies of its state, so the
~1,400-token head costs one forward pass per step instead of one per example.

The schedule is by time (warmup, then cosine decay to 10% over ``--minutes``), so a run fits the
time it is given on any machine. On a shared CPU one torch thread is the fast choice: OpenMP
workers spinning against other processes made steps 10-30x slower with two (measured here).

Multi-token prediction: ``--mtp 1`` trains V4's MTP block beside the trunk (loss = trunk CE +
``--mtp-weight`` × MTP CE, both on the assistant tokens; see :mod:`.batch`); ``--resume`` from
a checkpoint without one adds it, freshly initialised from ``--seed``, and keeps everything else
exact. ``--freeze-trunk`` trains the MTP block alone: the trunk's weights and its AdamW state
stay bit-identical and nothing runs backward through it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from whalebone.engine.runtime.vocab import VocabMap
from whalebone.engine.v4.config import ModelConfig
from whalebone.engine.v4.model import Transformer
from whalebone.engine.v4.state import SeqState
from whalebone.engine.v4.weights import save_checkpoint
from whalebone.training.batch import batch_losses, micro_batches, pad_batch, run_head
from whalebone.training.copying import copy_example
from whalebone.training.data import Example, build_parallel, load, save
from whalebone.training.stage import (
    load_optimizer,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from whalebone.training.tasks import MAKERS


def train_forward(model: Transformer, ids: torch.Tensor, state: SeqState) -> torch.Tensor:
    """:meth:`Transformer.forward` with autograd on (it runs under ``inference_mode``):
    logits (T, vocab) for tokens ``ids`` appended at ``state.pos``."""
    cfg = model.cfg
    pos = state.pos
    h = model.embed(ids).unsqueeze(1).repeat(1, cfg.hc_mult, 1)
    for layer, st in zip(model.layers, state.layers, strict=True):
        h = layer(h, st, pos, ids)
    state.pos = pos + ids.size(0)
    return model.logits(h)


class Encoded:
    """Examples as model ids: one head per group, each example's rest with its loss mask."""

    def __init__(self, examples: list[Example], vocab: VocabMap) -> None:
        from whalebone.dsml.tokenizer import load_tokenizer

        tok = self.tokenizer = load_tokenizer()
        self.heads: list[list[int]] = []
        self.groups: dict[int, list[tuple[list[int], list[bool], str]]] = defaultdict(list)
        head_index: dict[str, int] = {}
        for ex in examples:
            if ex.head not in head_index:
                head_index[ex.head] = len(self.heads)
                self.heads.append(vocab.to_model(tok.encode(ex.head)))
            ids, mask = encode_pieces(ex.pieces, vocab, tok)
            self.groups[head_index[ex.head]].append((ids, mask, ex.family))
        self.coverage = vocab.coverage([i for ex in examples for t, _ in ex.pieces
                                        for i in tok.encode(t)][:200_000])


# The nano shape: the ``nano`` preset made narrower (dim 128, 4 experts), which trains about
# twice as fast per token on a CPU; the vocabulary is what the training text uses.
SHAPE: dict[str, Any] = {"dim": 128, "n_heads": 4, "head_dim": 64, "rope_head_dim": 16,
                         "q_lora_rank": 96, "o_groups": 2, "o_lora_rank": 64,
                         "index_n_heads": 2, "index_head_dim": 32, "n_routed_experts": 4,
                         "n_activated_experts": 2, "moe_inter_dim": 192}
# Every printable ASCII character alone, so that any text the model must copy can be spelled.
SPELLING = [chr(c) for c in range(32, 127)]


def make_trainable(model: Transformer, *, tie: bool, fresh: bool, lr: float,
                   freeze_trunk: bool = False,
                   ) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    """Switch ``model`` to training: optionally tie its embeddings, turn on gradients, and
    return its trainable parameters (a tied matrix counted once) with their AdamW optimizer.

    The optimizer has one group for the trunk and, with MTP, a second for the MTP blocks, so
    that a run adding or dropping MTP resumes the trunk's state (:func:`.stage.load_optimizer`).
    ``freeze_trunk``: the trunk's parameters take no gradient; AdamW skips parameters without
    one (no moment update, no weight decay), so they stay bit-identical.

    Tied: one matrix for input and output embeddings (saved as two equal tensors, so the
    checkpoint stays V4's layout). Copying a prompt token then needs one map that is near the
    identity for every token, learnt from all of them; untied, each of the ~1,000 number tokens
    needs its own output row lined up with its input row, and a copy test (24 random tokens of
    3,887, repeated) stayed at chance for 800 steps untied while tied fell from 8.4 to 4.0 nats.
    A ``fresh`` model's embedding is scaled to the output layer's size first (logits start
    O(1), as untied); a resumed one is already tied."""
    if tie:
        if fresh:
            with torch.no_grad():
                model.embed.weight.mul_(model.cfg.dim**-0.5)
        model.head.weight = model.embed.weight
    model.train()
    model.requires_grad_(True)
    trunk = [p for n, p in model.named_parameters() if not n.startswith("mtp.")]
    mtp = [p for n, p in model.named_parameters() if n.startswith("mtp.")]
    if freeze_trunk:
        for p in trunk:
            p.requires_grad_(False)
    groups = [{"params": trunk}] + ([{"params": mtp}] if mtp else [])
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    return [p for p in model.parameters() if p.requires_grad], opt


def with_mtp(model: Transformer, n: int, seed: int) -> Transformer:
    """``model`` with ``n`` MTP blocks: the trunk (and any block both have) as it is, new
    blocks freshly initialised from ``seed``."""
    if n == model.cfg.n_mtp_layers:
        return model
    out = Transformer(model.cfg.with_mtp(n), init=False)
    out.init_random(seed, prefix="mtp.")
    load_weights(out, model.state_dict())
    return out


def load_weights(model: Transformer, weights: dict[str, torch.Tensor]) -> None:
    """Load the tensors of ``weights`` that ``model`` has; every trunk tensor must be there
    (MTP blocks may be missing: a stage without MTP resumed with it)."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in weights and not k.startswith("mtp."))
    if missing:
        raise SystemExit(f"the resumed weights lack {missing[:4]}")
    model.load_state_dict({**own, **{k: v for k, v in weights.items() if k in own}})


def extra_examples(spec: str, held_out: int) -> list[Example]:
    """``--extra``: a JSONL file of examples, or ``FAMILY:N`` to render N tasks of a family
    (seeded like the main data, so the same spec gives the same examples)."""
    from whalebone.training.data import build

    if Path(spec).is_file():
        return load(Path(spec))
    family, _, n = spec.partition(":")
    if family not in MAKERS or not n.isdigit():
        raise SystemExit(f"--extra {spec}: neither a JSONL file nor FAMILY:N")
    return build(int(n), held_out=held_out, families=(family,))


def build_vocab(examples: list[Example], size: int) -> VocabMap:
    texts = {ex.head for ex in examples}
    texts.update("".join(t for t, _ in ex.pieces) for ex in examples)
    return VocabMap.build_from_texts([*sorted(texts), *SPELLING], size)


def lr_at(frac: float, step: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: dict[str, Any] = {"args": vars(args), "steps": []}

    t0 = time.time()
    # options first: a bad --families or --extra fails before minutes of rendering data
    wanted = {f.strip() for f in (args.families or "").split(",") if f.strip()}
    known = {*MAKERS, "auditor"}
    if wanted - known:
        raise SystemExit(f"--families: unknown {sorted(wanted - known)}; known: "
                         f"{', '.join(sorted(known))}")
    extra = extra_examples(args.extra, args.held_out) if args.extra else []
    cache = Path(args.data) if args.data else None
    if cache is not None and cache.exists():
        examples = load(cache)
    else:
        examples = build_parallel(args.per_family, held_out=args.held_out, workers=args.workers)
        if cache is not None:
            save(examples, cache)
    # the vocabulary comes from the main data only, so that a run adding --extra examples
    # (a curriculum) can resume a checkpoint trained without them
    vocab_examples = examples
    examples = examples + extra
    if wanted:
        examples = [ex for ex in examples if ex.family in wanted]
        if not examples:
            raise SystemExit(f"no examples of families {sorted(wanted)} in the data")
    log["examples"] = len(examples)
    log["data_seconds"] = round(time.time() - t0, 1)
    print(f"{len(examples)} examples in {log['data_seconds']} s", flush=True)

    cfg = ModelConfig.preset(args.preset)
    if args.preset == "nano" and not args.full_preset:
        cfg = cfg.replace(**SHAPE)
    # a resumed run keeps its checkpoint's vocabulary (its embedding rows are those ids):
    # the same data builds the same one, and other data of the same families is covered
    vocab = (VocabMap.load(args.resume) if args.resume
             else build_vocab(vocab_examples, cfg.vocab_size))
    cfg = cfg.replace(vocab_size=vocab.size)  # a corpus with fewer tokens than the preset
    data = Encoded(examples, vocab)
    log["vocab_coverage"] = round(data.coverage, 5)
    print(f"vocabulary {vocab.size} ids, coverage {data.coverage:.4%}", flush=True)

    state = None
    if args.resume:
        from whalebone.engine.v4.weights import load_checkpoint

        # Continue an earlier run: exactly from its FP32 state when it has one, else from
        # the BF16 weights alone.
        if data.coverage < 0.999:
            raise SystemExit(f"{args.resume}'s vocabulary covers only {data.coverage:.2%} of "
                             "this data's tokens")
        model = load_checkpoint(args.resume)
        state = load_state(Path(args.resume))
        if state is not None:
            load_weights(model, state["model"])
        if args.mtp is not None:
            model = with_mtp(model, args.mtp, args.seed)
        cfg = model.cfg
        earlier = Path(args.resume) / "train_log.json"
        if earlier.exists():  # the card reports every stage
            log["previous"] = json.loads(earlier.read_text(encoding="utf-8"))
    else:
        model = Transformer(cfg.with_mtp(args.mtp or 0), seed=args.seed)
    if args.freeze_trunk and not model.has_mtp:
        raise SystemExit("--freeze-trunk trains the MTP block alone: add --mtp 1")
    log["mtp_layers"] = model.cfg.n_mtp_layers
    # built on the CPU (seeded init, RoPE tables), then moved; new tensors go to the device
    model.to(args.device)
    torch.set_default_device(args.device)
    params, opt = make_trainable(model, tie=args.tie_embeddings, fresh=not args.resume,
                                 lr=args.lr, freeze_trunk=args.freeze_trunk)
    log["parameters"] = sum(p.numel() for p in model.parameters())  # a tied matrix once
    log["trained_parameters"] = sum(p.numel() for p in params)  # the MTP block's when frozen
    rng = random.Random(args.seed)
    copy_rng = random.Random(f"copy:{args.seed}")
    groups = sorted(data.groups)
    weights = [len(data.groups[g]) for g in groups]
    order = {g: rng.sample(range(len(data.groups[g])), len(data.groups[g])) for g in groups}
    cursor = dict.fromkeys(groups, 0)
    step = tokens = 0
    done_s = 0.0  # seconds trained in earlier stages
    if state is not None:
        load_optimizer(opt, state["opt"])
        pr = state["progress"]
        step, tokens, done_s = pr["step"], pr["tokens"], pr["seconds"]
        set_rng_state(rng, pr["rng"])
        set_rng_state(copy_rng, pr["copy_rng"])
        saved = {int(g): v for g, v in pr["order"].items()}
        if sorted(saved) == groups and all(len(saved[g]) == len(data.groups[g])
                                           for g in groups):  # same data: same order onwards
            order = {int(g): list(v) for g, v in pr["order"].items()}
            cursor = {int(g): int(v) for g, v in pr["cursor"].items()}
        log["resumed_at_step"] = step
    first_tokens = tokens  # the log counts this stage's tokens; resume.pt the run's
    tok = data.tokenizer

    def progress(seconds: float) -> dict[str, Any]:
        return {"step": step, "tokens": tokens, "seconds": seconds, "rng": rng_state(rng),
                "copy_rng": rng_state(copy_rng), "order": {str(g): v for g, v in order.items()},
                "cursor": {str(g): v for g, v in cursor.items()}}

    budget = args.minutes * 60
    start = time.time()
    last_save = start
    stage_steps = 0
    while time.time() - start < budget and (args.max_steps is None
                                            or stage_steps < args.max_steps):
        frac = (time.time() - start) / budget if args.schedule == "cosine" else 0.0
        lr = lr_at(frac, step, args.lr, args.warmup)
        for g_ in opt.param_groups:
            g_["lr"] = lr
        g = rng.choices(groups, weights)[0]
        convs = []
        for _ in range(args.batch):
            if cursor[g] >= len(order[g]):
                order[g] = rng.sample(range(len(data.groups[g])), len(data.groups[g]))
                cursor[g] = 0
            ids, mask, _family = data.groups[g][order[g][cursor[g]]]
            cursor[g] += 1
            convs.append((ids, mask))
        parts = [(data.heads[g], convs)]
        if args.copy:  # their head is the BOS alone
            copies = [encode_example(copy_example(copy_rng), vocab, tok)
                      for _ in range(args.copy)]
            parts.append((copies[0][0][:1], [(ids[1:], m[1:]) for ids, m in copies]))
        count = sum(sum(m[1:]) for _, batch in parts for _, m in batch)
        total = total_mtp = 0.0
        for head_ids, batch in parts:
            head_state, mtp_head = run_head(model, torch.tensor(head_ids))
            for part in micro_batches(batch, args.micro_tokens):
                x, m = pad_batch(part)
                loss, mtp_loss, _n = batch_losses(model, head_state, mtp_head, x, m)
                objective = loss if mtp_loss is None else loss + args.mtp_weight * mtp_loss
                (objective / count).backward()  # the mean over every target of the step
                total += loss.item()
                total_mtp += 0.0 if mtp_loss is None else mtp_loss.item()
            tokens += sum(len(ids) for ids, _ in batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        stage_steps += 1
        loss_v = total / count
        if step % args.log_every == 0 or stage_steps == 1:
            took = time.time() - start
            mtp_v = f" mtp {total_mtp / count:.4f}" if model.has_mtp else ""
            print(f"step {step} loss {loss_v:.4f}{mtp_v} lr {lr:.2e} {took:.0f}s "
                  f"{(tokens - first_tokens) / took:.0f} tok/s", flush=True)
            log["steps"].append({"step": step, "loss": round(loss_v, 5),
                                 "s": round(done_s + took, 1)})
            if model.has_mtp:
                log["steps"][-1]["mtp_loss"] = round(total_mtp / count, 5)
        if time.time() - last_save > args.save_every * 60:
            log["tokens"] = tokens - first_tokens
            write(model, vocab, out, log, step, done_s + time.time() - start)
            save_state(out, model, opt, progress(done_s + time.time() - start))
            last_save = time.time()
    log["train_seconds"] = round(time.time() - start, 1)
    log["tokens"] = tokens - first_tokens
    write(model, vocab, out, log, step, done_s + time.time() - start)
    save_state(out, model, opt, progress(done_s + time.time() - start))
    return log


def encode_example(ex: Example, vocab: VocabMap, tok: Any) -> tuple[list[int], list[bool]]:
    """An example's head and rest as one model-id sequence with its loss mask."""
    head = vocab.to_model(tok.encode(ex.head))
    ids, mask = encode_pieces(ex.pieces, vocab, tok)
    return head + ids, [False] * len(head) + mask


def encode_pieces(pieces: list[tuple[str, bool]], vocab: VocabMap,
                  tok: Any) -> tuple[list[int], list[bool]]:
    """Model ids and the loss mask (the assistant's tokens, never ``<unk>``: a token outside
    the vocabulary is no target to learn)."""
    ids: list[int] = []
    mask: list[bool] = []
    for text, mine in pieces:
        piece = vocab.to_model(tok.encode(text))
        ids += piece
        mask += [mine and i != vocab.unk_id for i in piece]
    return ids, mask


def write(model: Transformer, vocab: VocabMap, out: Path, log: dict[str, Any], step: int,
          seconds: float) -> None:
    """Save a checkpoint the bundled engine loads (BF16 weights: half the bytes)."""
    was = model.training
    model.eval()
    save_checkpoint(model, out, dtype=torch.bfloat16)
    model.train(was)
    vocab.save(out)
    log["final_step"] = step
    log["seconds_so_far"] = round(seconds, 1)
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"saved {out} at step {step}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m whalebone.training.train",
                                description="Train the whalebone-nano checkpoint.")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--minutes", type=float, default=30.0, help="training time (data excluded)")
    p.add_argument("--preset", default="nano", help="model shape (ModelConfig preset)")
    p.add_argument("--full-preset", action="store_true",
                   help="train the preset's own shape, not the narrower nano SHAPE")
    p.add_argument("--per-family", type=int, default=600, help="train tasks per family")
    p.add_argument("--held-out", type=int, default=50, help="held-out tasks per family")
    p.add_argument("--data", help="cache the rendered examples in this JSONL file")
    p.add_argument("--extra", help="more examples to train on, not in the vocabulary: a JSONL "
                   "file, or FAMILY:N to render N tasks (e.g. echo_easy:3000)")
    p.add_argument("--families", help="train only on these families (comma-separated)")
    p.add_argument("--batch", type=int, default=16, help="examples per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    p.add_argument("--workers", type=int, default=2, help="processes rendering the data")
    p.add_argument("--device", default="cpu", help="cpu, cuda, … (the checkpoint runs on CPU)")
    p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True,
                   help="share the embedding and output matrices while training (default)")
    p.add_argument("--resume", help="continue from this checkpoint folder: exactly from its "
                   "resume.pt (FP32 weights, optimizer, data order) when it has one")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate after warmup: cosine to 10%% over --minutes, or held "
                   "(a stage of a longer run; resumes give the same rates)")
    p.add_argument("--copy", type=int, default=0,
                   help="copy-dense examples added to every step (see training/copying.py)")
    p.add_argument("--micro-tokens", type=int, default=4096,
                   help="padded tokens per forward (a step is cut into length-sorted parts)")
    p.add_argument("--mtp", type=int, choices=(0, 1), help="multi-token prediction blocks "
                   "(V4 has one; default: what the resumed checkpoint has, else 0)")
    p.add_argument("--mtp-weight", type=float, default=0.3,
                   help="loss = trunk CE + this x MTP CE (V3's 0.3)")
    p.add_argument("--freeze-trunk", action="store_true",
                   help="train the MTP block alone (the trunk's weights stay bit-identical)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (this stage)")
    p.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    log = train(args)
    print(f"done: {log['final_step']} steps, {log['tokens']} tokens in {log['train_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
