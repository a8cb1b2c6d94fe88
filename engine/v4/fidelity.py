"""Hold our engine against V4's own inference code on the same weights.

V4's reference ``generate`` loop prefills the prompt in one forward from position 0 and keeps
only the last position's logits, then feeds one token at a time. :func:`reference_logits` runs
our model on exactly that schedule::

    from whalebone.engine.v4.fidelity import reference_logits
    logits = reference_logits("path/to/checkpoint", [0, 5, 7, 9, 11], prefill_len=3)
    # [logits after token 3 (the prefill's last position), after token 4, after token 5]

so the list lines up, item for item, with the logits V4's ``inference/model.py`` produces on
the same folder (run its ``Transformer.forward(tokens[:, :P], 0)`` then
``forward(tokens[:, i:i+1], i)`` for i = P …). The command line does the same and writes the
stack as one safetensors file (tensor ``logits``, shape (steps, vocab), and ``token_ids``)::

    python -m whalebone.engine.v4.fidelity CKPT --tokens 0,5,7,9,11 --prefill 3 \
        --out out.safetensors

``token_ids`` are *model* vocabulary ids (no tokenizer is involved).

Checked this way against a transcription of V4's ``inference/model.py`` (FP32, quantization
steps off) on random micro/nano checkpoints: prefills of 1-260 tokens then up to 299 decode
steps agree to ~3e-6. The MTP block (:meth:`~whalebone.engine.v4.model.Transformer.mtp_forward`)
is held to a line-for-line transcription of the reference ``MTPBlock.forward`` (next token's
embedding through ``enorm``/``e_proj``, the trunk's streams through ``hnorm``/``h_proj``, a
window-only block, its own ``hc_head`` and ``norm`` into the shared head) in
``tests/test_engine_mtp.py``; these logits are the trunk's.

Where the reference's tensor semantics decide the numbers, and what we do:

- **A hash-table row that names one expert twice** (V4's released ``tid2eid`` tables have such
  rows). The reference adds routed outputs with ``y[idx] += expert(x[idx], weights[idx, top])``;
  an indexed ``+=`` with a token listed twice in ``idx`` writes its row once, so the expert is
  applied once, at one slot's weight. **We follow the reference** (``moe._first_slots``): it is
  what V4 computed when it was trained and evaluated, so it is the model's meaning. The
  renormalisation still counts both slots, as the reference's does. Score-routed layers choose
  with ``topk`` and never repeat an expert.
- **Indexer scores that tie at the top-k cut** (ReLU makes every head 0 — common with 2-4
  index heads and random weights, negligible with V4's 64): we give the last top-k slots to the
  oldest entries so that any chunking selects the same keys; ``torch.topk`` in the reference
  breaks ties by its kernel's order. **We differ on purpose**; compare on models whose scores
  do not tie at the cut. Masked entries (future blocks at -inf) that fill a short prefill's
  top-k are dropped in both (the reference marks them -1 for ``sparse_attn``).
- **Expert choice at an exact tie of biased scores**: both call ``topk`` on the same FP32
  values, so the same implementation picks the same experts; the order of the chosen experts
  does not matter, as both add expert outputs in ascending expert order.
- **Dtypes**: the reference runs in BF16 with FP32 islands (RMSNorm, gate scores, SwiGLU, the
  MoE accumulator, hyper-connections, the indexer's FP4 simulation) and casts the SwiGLU
  hidden state back to BF16 before ``w2``. We compute in FP32 throughout (``quant`` can
  simulate FP8/FP4 activations), so we match the reference run in FP32 and differ from its BF16
  run by BF16 rounding, not by any rule.
- **In-place ops** (``apply_rotary_emb`` on a view of ``q``, ``relu_`` on the index scores,
  the compressor's state writes at distinct positions) change nothing a second reader sees;
  no indexed write other than the MoE's above can receive one position twice.
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

    from whalebone.engine.v4.weights import load_checkpoint

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
        prog="python -m whalebone.engine.v4.fidelity",
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
