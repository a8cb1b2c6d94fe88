from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO.parent / "shared" / "v4-encoding-vectors"


def load_vector(n: int) -> tuple[Any, str]:
    inp = json.loads((VECTORS / f"test_input_{n}.json").read_text(encoding="utf-8"))
    out = (VECTORS / f"test_output_{n}.txt").read_text(encoding="utf-8")
    return inp, out


@pytest.fixture
def vector():
    if not VECTORS.is_dir():
        pytest.skip(f"V4 encoder vectors not found at {VECTORS}")
    return load_vector
