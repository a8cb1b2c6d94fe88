from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"

# (vector number, thinking mode) as published with V4's reference encoder.
VECTOR_MODES = [(1, "thinking"), (2, "thinking"), (3, "thinking"), (4, "chat")]


def load_vector(n: int) -> tuple[list[dict[str, Any]], str]:
    """The messages of vector ``n`` (tools attached to messages[0] for vector 1) and its
    expected rendering."""
    data = json.loads((VECTORS / f"test_input_{n}.json").read_text(encoding="utf-8"))
    if isinstance(data, dict):
        messages = data["messages"]
        messages[0]["tools"] = data["tools"]
    else:
        messages = data
    return messages, (VECTORS / f"test_output_{n}.txt").read_text(encoding="utf-8")
