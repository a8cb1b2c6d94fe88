"""Write a checkpoint's ``MODEL_CARD.md`` from its config, training log and evaluation.

    python -m whalebone.training.card --checkpoint DIR --eval eval.json [--machine TEXT]

``eval.json`` is what ``bench/nano_eval.py --json`` writes. The card template is ``card.md``
beside this module; every figure in its tables comes from the files, none is typed by hand
(``--summary FILE`` adds a paragraph of prose after the scores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whalebone.engine.v4.weights import read_config

TEMPLATE = Path(__file__).with_name("card.md")


def copy_table(results: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    """``python -m whalebone.training.copyeval --json`` output as a Markdown section."""
    classes = ("number", "word", "path", "other")
    rows = "\n".join(
        f"| {arm.rsplit('/', 1)[-1]} | " + " | ".join(
            f"{r[c]['loss']:.2f} / {r[c]['top1']:.1%}" for c in classes) + " |"
        for arm, r in results.items())
    first = next(iter(results.values()))
    counts = ", ".join(f"{c} {first[c]['n']}" for c in classes)
    return (f"## {title}\n\nTeacher-forced on held-out agent conversations "
            "(`python -m whalebone.training.copyeval`): loss in nats / top-1 on the assistant "
            "tokens that copy a number, word or path from the prompt, and on all others "
            f"(targets: {counts}).\n\n"
            "| run | numbers | words | paths | other |\n|---|---|---|---|---|\n"
            f"{rows}\n\n")


def render(folder: Path, log: dict[str, Any], evals: list[dict[str, Any]], machine: str,
           summary: str = "", copy_ab: str = "") -> str:
    cfg = read_config(folder)
    args = log["args"]
    rows = "\n".join(
        f"| {e['family']} | {e['tasks']} | {e['well_formed']:.1%} | {e['right_call']:.1%} | "
        f"{e['correct']:.1%} |" for e in evals)
    audit = next((e for e in evals if e["family"] == "auditor"), None)
    note = ("" if audit is None else
            f"The auditor's decisions agree with the policy on {audit['correct']:.1%} of the "
            f"held-out cases and with the cases' productive/doomed labels on "
            f"{audit['label_agreement']:.1%} (the policy itself, a fixed rule, is not perfect "
            "on the hard cases).")
    stages = []
    stage: dict[str, Any] | None = log
    while stage is not None:
        stages.append(stage)
        stage = stage.get("previous")
    stages.reverse()
    command = " then ".join(_command(s["args"]) for s in stages)
    steps = sum(s["final_step"] - s.get("resumed_at_step", 0) for s in stages)
    tokens = sum(s.get("tokens", 0) for s in stages)
    seconds = sum(s.get("train_seconds", s.get("seconds_so_far", 0)) for s in stages)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return TEMPLATE.read_text(encoding="utf-8").format(
        params_m=log["parameters"] / 1e6, layers=cfg.n_layers,
        ratios=", ".join(map(str, cfg.compress_ratios[:cfg.n_layers])),
        experts=cfg.n_routed_experts, active=cfg.n_activated_experts, hc=cfg.hc_mult,
        heads=cfg.n_heads, head_dim=cfg.head_dim, dim=cfg.dim, vocab=cfg.vocab_size,
        size_mb=size / 1e6, examples=log["examples"], command=command,
        steps=steps, batch=args["batch"], tokens=tokens, minutes=seconds / 60, machine=machine,
        data_s=log.get("data_seconds", 0), lr=args["lr"], seed=args["seed"],
        final_loss=log["steps"][-1]["loss"] if log["steps"] else float("nan"),
        mtp=_mtp_note(cfg.n_mtp_layers, log["steps"][-1] if log["steps"] else {}),
        per_family=next((e["tasks"] for e in evals if e["family"] != "auditor"), 0),
        rows=rows, auditor_note=note + (f"\n\n{summary.strip()}" if summary.strip() else ""),
        copy_ab=copy_ab)


def _mtp_note(blocks: int, last: dict[str, Any]) -> str:
    if not blocks:
        return ""
    loss = f", training loss {last['mtp_loss']:.3f}" if "mtp_loss" in last else ""
    return (f"; plus V4's multi-token prediction block (window-only, predicting the token after "
            f"next for speculative decoding{loss})")


def _command(args: dict[str, Any]) -> str:
    """The training command of one stage, with the options that differ from the defaults."""
    from whalebone.training.train import parse

    defaults = vars(parse(["--out", "DIR"]))
    shown = []
    for k, v in args.items():
        if (k in ("out", "data", "workers", "log_every", "save_every") or v is None
                or v == defaults.get(k, v)):
            continue
        flag = k.replace("_", "-")
        if k == "resume":  # a folder on the training machine: the stage before this one
            v = "PREVIOUS_STAGE"
        shown.append((f"--{flag}" if v else f"--no-{flag}") if isinstance(v, bool)
                     else f"--{flag} {v}")
    return "`python -m whalebone.training.train --out DIR " + " ".join(shown) + "`"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write MODEL_CARD.md for a nano checkpoint.")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True, help="bench/nano_eval.py --json output")
    p.add_argument("--machine", default="a shared 2-core CPU (torch, one thread)")
    p.add_argument("--summary", type=Path, help="a paragraph (Markdown) read after the scores")
    p.add_argument("--copy-ab", type=Path, default=Path(__file__).with_name("assets") /
                   "copy_ab.json", help="copyeval --json output: the recipe's A/B "
                   "(default: the one that chose the copy-dense recipe)")
    p.add_argument("--copy-ab-title", default="Copying, A/B of the recipe")
    args = p.parse_args(argv)
    log = json.loads((args.checkpoint / "train_log.json").read_text(encoding="utf-8"))
    evals = json.loads(args.eval.read_text(encoding="utf-8"))
    summary = args.summary.read_text(encoding="utf-8") if args.summary else ""
    copy_ab = (copy_table(json.loads(args.copy_ab.read_text(encoding="utf-8")),
                          args.copy_ab_title) if args.copy_ab.is_file() else "")
    text = render(args.checkpoint, log, evals, args.machine, summary, copy_ab)
    (args.checkpoint / "MODEL_CARD.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.checkpoint / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
