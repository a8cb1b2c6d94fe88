"""Training examples rendered for tests: real tasks through the real agent loop, small."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import anyio

from whalebone.training import data as D
from whalebone.training.tasks import make_tasks


def render(family: str, n: int = 2, seed: int = 3) -> list[D.Example]:
    """``n`` tasks of ``family`` (task seed ``seed``) rendered as training examples."""

    async def main(tmp: Path) -> list[D.Example]:
        out = []
        for task in make_tasks(family, n, seed):
            out += await D.render_task(task, tmp, random.Random(0))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        return anyio.run(main, Path(tmp))
