"""How well a checkpoint copies: teacher-forced loss and top-1 on copied tokens, by class.

    python -m whalebone.training.copyeval --checkpoint DIR [--per-family 12] [--json out.json]

Held-out conversations (seed 0, never trained on) of the agent families are rendered through
the real loop and run teacher-forced. An assistant token is a *copy* when the word it is part
of (letters, digits and ``_./-``) also appears in the conversation's user turns or tool results
and nowhere in the head (the system prompt and tool list, so template words do not count).
Its class: ``path`` (has a ``/`` or a file extension), ``number`` (has a digit), else ``word``.
Every other assistant token is ``other``. This splits the measure issue 15 starts from (copied
numbers 4.90 nats / 19% top-1, words and paths 1.00 / 77%, the rest 0.06 / 98.5%).

A checkpoint with an MTP block also gets the block's top-1 (the token after next), overall and
by class, and how often it agrees with the trunk's top-1: the draft acceptance that
speculative decoding can expect where the trunk's own guesses are right.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import torch
import torch.nn.functional as F

from whalebone.training.batch import batch_outputs, micro_batches, pad_batch, run_head
from whalebone.training.data import HELD_OUT_SEED, Example, render_task
from whalebone.training.tasks import make_tasks

FAMILIES = ("arithmetic", "read_file", "list_dir", "write_file", "memory")
CLASSES = ("number", "word", "path", "other")
WORD = re.compile(r"[A-Za-z0-9_./-]+")


def token_class(word: str | None, seen: set[str], head_words: set[str]) -> str:
    if word is None or word not in seen or word in head_words:
        return "other"
    if "/" in word or re.search(r"\.[a-z]{2,4}$", word):
        return "path"
    return "number" if any(c.isdigit() for c in word) else "word"


def classify(ex: Example, tok: Any) -> tuple[list[int], list[str | None]]:
    """An example's rest as V4 token ids, with each token's class (None: not the model's)."""
    head_words = set(WORD.findall(ex.head))
    seen = {w for text, mine in ex.pieces if not mine for w in WORD.findall(text)}
    ids: list[int] = []
    classes: list[str | None] = []
    for text, mine in ex.pieces:
        piece = tok.encode(text)
        ids += piece
        if not mine:
            classes += [None] * len(piece)
            continue
        spans = {}  # character -> the word covering it
        for m in WORD.finditer(text):
            for i in range(m.start(), m.end()):
                spans[i] = m.group()
        at = 0
        for i in range(len(piece)):
            # offsets from decoding growing prefixes (exact for this ASCII-heavy text)
            end = len(tok.decode(piece[: i + 1]))
            classes.append(token_class(spans.get(at) or spans.get(end - 1), seen, head_words))
            at = end
    return ids, classes


def render_held_out(per_family: int) -> list[Example]:
    async def main(tmp: Path) -> list[Example]:
        out: list[Example] = []
        for family in FAMILIES:
            for task in make_tasks(family, per_family, HELD_OUT_SEED):
                out += await render_task(task, tmp, random.Random(0))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        return anyio.run(main, Path(tmp))


def evaluate(model: Any, vocab: Any, examples: list[Example]) -> dict[str, dict[str, float]]:
    """Per class: targets, mean loss (nats) and top-1 accuracy. A model with an MTP block also
    gets, per class, the block's (predicting each token from two positions back, teacher
    forced): ``mtp_loss``, ``mtp_top1``, and ``mtp_agree``, how often its top-1 is the trunk's
    top-1 for the same token (what a speculative decoder's draft is checked against)."""
    from whalebone.dsml.tokenizer import load_tokenizer

    tok = load_tokenizer()
    groups: dict[str, list[tuple[list[int], list[Any]]]] = defaultdict(list)
    for ex in examples:
        ids, classes = classify(ex, tok)
        groups[ex.head].append((vocab.to_model(ids), classes))
    sums: dict[str, list[float]] = {c: [0.0] * 6 for c in CLASSES}
    model.eval()
    with torch.no_grad():
        for head_text, convs in groups.items():
            head, mtp_head = run_head(model, torch.tensor(vocab.to_model(tok.encode(head_text))))
            for part in micro_batches(convs, 4096):
                ids, _ = pad_batch([(i, [c is not None for c in cl]) for i, cl in part])
                cls = [cl[1:] + [None] * (ids.size(1) - len(cl)) for _, cl in part]
                where = torch.tensor([[c is not None for c in row] for row in cls])
                logits, mtp_logits = batch_outputs(model, head, mtp_head, ids, where)
                target = ids[:, 1:][where]
                stats = [F.cross_entropy(logits, target, reduction="none"),
                         logits.argmax(-1) == target]
                if mtp_logits is not None:
                    draft = mtp_logits.argmax(-1)
                    stats += [F.cross_entropy(mtp_logits, target, reduction="none"),
                              draft == target, draft == logits.argmax(-1)]
                names = [c for row in cls for c in row if c is not None]
                columns = [v.tolist() for v in stats]
                for i, name in enumerate(names):
                    s = sums[name]
                    s[0] += 1
                    for k, values in enumerate(columns, start=1):
                        s[k] += float(values[i])
    out: dict[str, dict[str, float]] = {}
    for c, s in sums.items():
        n = max(1.0, s[0])
        out[c] = {"n": int(s[0]), "loss": s[1] / n, "top1": s[2] / n}
        if model.has_mtp:
            out[c] |= {"mtp_loss": s[3] / n, "mtp_top1": s[4] / n, "mtp_agree": s[5] / n}
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    line = "  ".join(f"{c} {r['loss']:.2f} nats {r['top1']:.1%} (n={r['n']})"
                     for c, r in results.items())
    if all("mtp_top1" in r for r in results.values()):
        n = sum(r["n"] for r in results.values()) or 1
        top1, agree = (sum(r[k] * r["n"] for r in results.values()) / n
                       for k in ("mtp_top1", "mtp_agree"))
        line += (f"\n  MTP (token after next): top-1 {top1:.1%} of {n} assistant tokens, "
                 f"agrees with the trunk's top-1 {agree:.1%}; by class " + "  ".join(
                     f"{c} {r['mtp_top1']:.1%}" for c, r in results.items()))
    return line


def main(argv: list[str] | None = None) -> int:
    from whalebone.engine.runtime.bundled import CHECKPOINT_DIR
    from whalebone.engine.runtime.vocab import VocabMap
    from whalebone.engine.v4.weights import load_checkpoint

    p = argparse.ArgumentParser(prog="python -m whalebone.training.copyeval",
                                description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", nargs="+", default=[str(CHECKPOINT_DIR)])
    p.add_argument("--per-family", type=int, default=12)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    examples = render_held_out(args.per_family)
    out = {}
    for folder in args.checkpoint:
        model = load_checkpoint(folder).float()
        out[folder] = evaluate(model, VocabMap.load(folder), examples)
        print(f"{folder}: {table(out[folder])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
