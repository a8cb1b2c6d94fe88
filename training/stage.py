"""Training in stages that resume exactly: the FP32 state beside the BF16 export.

The checkpoint folder the engine loads holds BF16 weights (what ships). Continuing from those
would lose the FP32 master weights, AdamW's moments and where the data order stood, so each
save also writes ``resume.pt``: FP32 weights, the optimizer state, the step and token counts,
the seconds trained, and the data order (per-group permutations and cursors, and the Python
RNG states that draw groups and copy examples). ``--resume DIR`` continues from it, and a run
split into stages then makes the same updates as one run would (``tests/test_training.py``
holds them equal). Everything in it is tensors, numbers and lists, so it loads with
``torch.load(weights_only=True)`` (no pickled code from a folder).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

RESUME = "resume.pt"


def rng_state(rng: random.Random) -> list[Any]:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def set_rng_state(rng: random.Random, saved: list[Any]) -> None:
    version, state, gauss = saved
    rng.setstate((version, tuple(state), gauss))


def save_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
               progress: dict[str, Any]) -> None:
    """Write ``resume.pt`` atomically (a run killed mid-save keeps the previous one)."""
    tmp = folder / (RESUME + ".tmp")
    weights = {k: v.detach().float() for k, v in model.state_dict().items()}
    torch.save({"model": weights, "opt": opt.state_dict(), "progress": progress}, tmp)
    os.replace(tmp, folder / RESUME)


def load_state(folder: Path) -> dict[str, Any] | None:
    path = folder / RESUME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def load_optimizer(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load AdamW's state into ``opt`` whose groups are [trunk] or [trunk, MTP blocks]
    (:func:`.train.make_trainable`), from a run with or without MTP: the trunk's state always
    carries over exactly; the MTP group's when both runs have it, else it starts fresh (a
    stage adding MTP) or is dropped (a stage leaving it out)."""
    groups = list(saved["param_groups"])
    mine = opt.state_dict()["param_groups"]
    if len(groups) > len(mine):  # drop the MTP group and its moments
        keep = {i for g in groups[: len(mine)] for i in g["params"]}
        saved = {"state": {i: v for i, v in saved["state"].items() if i in keep},
                 "param_groups": groups[: len(mine)]}
    elif len(groups) < len(mine):  # a fresh MTP group: its ids follow the trunk's
        if len(groups[0]["params"]) != len(mine[0]["params"]):
            raise ValueError("the resumed optimizer state is for another model")
        saved = {"state": saved["state"], "param_groups": groups + mine[len(groups):]}
    opt.load_state_dict(saved)
