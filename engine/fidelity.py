"""Hold our engine against V4's own inference code on the same weights.

V4's reference ``generate`` loop prefills the prompt in one forward from position 0 and keeps
only the last position's logits, then feeds one token at a time. :func:`reference_logits` runs
our model on exactly that schedule::

    from whalebone.engine.fidelity import reference_logits
    logits = reference_logits("path/to/checkpoint", [0, 5, 7, 9, 11], prefill_len=3)
    # [logits after token 3 (the prefill's last position), after token 4, after token 5]

so the list lines up, item for item, with the logits V4's ``inference/model.py`` produces on
the same folder (run its ``Transformer.forward(tokens[:, :P], 0)`` then
``forward(tokens[:, i:i+1], i)`` for i = P …). The command line does the same and writes the
stack as one safetensors file (tensor ``logits``, shape (steps, vocab), and ``token_ids``)::

    python -m whalebone.engine.fidelity CKPT --tokens 0,5,7,9,11 --prefill 3 --out out.safetensors

``token_ids`` are *model* vocabulary ids (no tokenizer is involved).

Checked this way against a transcription of V4's ``inference/model.py`` (FP32, quantization
steps off) on random micro/nano checkpoints: prefills of 1-260 tokens then up to 299 decode
steps agree to ~3e-6. One known difference: when indexer scores tie exactly (ReLU makes every
head 0 — common with 2-4 index heads and random weights, negligible with V4's 64), we give the
last top-k slots to the oldest entries so that any chunking picks the same keys, while
``torch.topk`` in the reference breaks ties arbitrarily; compare on models whose scores do not
tie at the top-k boundary.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from whalebone.core.errors import WhaleboneError

if TYPE_CHECKING:
    import torch


class FidelityError(WhaleboneError, ValueError):
    """Arguments the reference schedule cannot run."""


def reference_logits(
    checkpoint_folder: str | os.PathLike[str], token_ids: Sequence[int], prefill_len: int
) -> list[torch.Tensor]:
    """Logits (vocab,) of the prefill's last position, then of each following single-token
    step: ``len(token_ids) - prefill_len + 1`` tensors."""
    import torch  # here, so that argument errors on the command line answer at once

    from whalebone.engine.weights import load_checkpoint

    ids = list(token_ids)
    if not 1 <= prefill_len <= len(ids):
        raise FidelityError(
            f"prefill_len must be in [1, {len(ids)}] for {len(ids)} tokens, got {prefill_len}"
        )
    model = load_checkpoint(checkpoint_folder)
    state = model.new_state()
    tokens = torch.tensor(ids, dtype=torch.int64)
    out = [model.forward(tokens[:prefill_len], state, last_only=True)[0]]
    for i in range(prefill_len, len(ids)):
        out.append(model.forward(tokens[i : i + 1], state)[0])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whalebone.engine.fidelity",
        description="Logits of a checkpoint on V4's reference prefill-then-decode schedule.",
    )
    parser.add_argument("folder", help="checkpoint folder (config.json + *.safetensors)")
    parser.add_argument("--tokens", required=True, help="comma-separated model token ids")
    parser.add_argument("--prefill", type=int, required=True, help="tokens in the prefill")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    args = parser.parse_args(argv)
    try:
        ids = [int(x) for x in args.tokens.split(",") if x.strip()]
    except ValueError:
        print(f"error: --tokens must be comma-separated integers, got {args.tokens!r}",
              file=sys.stderr)
        return 2
    try:
        logits = reference_logits(args.folder, ids, args.prefill)
    except WhaleboneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import torch
    from safetensors.torch import save_file

    save_file(
        {"logits": torch.stack(logits).contiguous(),
         "token_ids": torch.tensor(ids, dtype=torch.int64)},
        args.out,
        metadata={"prefill_len": str(args.prefill)},
    )
    print(f"wrote {len(logits)} x {logits[0].numel()} logits to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
