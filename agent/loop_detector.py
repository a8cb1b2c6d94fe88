"""Doom-loop detection: stop a run that repeats itself instead of letting it burn money.

Two patterns, both seen for hundreds of turns in other harnesses: the same call (name and
arguments) made again and again, and a cycle of calls (A, B, A, B, …) whose results bring nothing
new. The detector sees every tool call with its result and says when to pause.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


class LoopVerdict(BaseModel):
    kind: str  # "repeat" or "cycle"
    calls: list[str]  # the repeated call(s), as name(arguments)
    times: int
    message: str


def _signature(name: str, arguments: Mapping[str, Any]) -> str:
    return f"{name}({json.dumps(arguments, sort_keys=True, ensure_ascii=False)})"


class LoopDetector:
    """``repeat_limit`` identical calls in a row, or a cycle of up to ``max_cycle`` calls
    repeated ``repeat_limit`` times with identical results, is a loop."""

    def __init__(self, repeat_limit: int = 3, max_cycle: int = 4) -> None:
        if repeat_limit < 2:
            raise ValueError("repeat_limit must be at least 2")
        self.repeat_limit = repeat_limit
        self.max_cycle = max_cycle
        self._steps: list[tuple[str, str]] = []  # (signature, result digest)

    def observe(self, name: str, arguments: Mapping[str, Any], result: str) -> LoopVerdict | None:
        sig = _signature(name, arguments)
        digest = hashlib.blake2b(result.encode("utf-8", "surrogatepass"),
                                 digest_size=8).hexdigest()
        self._steps.append((sig, digest))
        keep = self.max_cycle * self.repeat_limit
        del self._steps[:-keep]
        return self._repeat() or self._cycle()

    def _repeat(self) -> LoopVerdict | None:
        n = self.repeat_limit
        tail = [sig for sig, _ in self._steps[-n:]]
        if len(tail) == n and len(set(tail)) == 1:
            return LoopVerdict(kind="repeat", calls=[tail[0]], times=n,
                               message=f"the same call {tail[0][:200]} was made {n} times "
                                       "in a row")
        return None

    def _cycle(self) -> LoopVerdict | None:
        n = self.repeat_limit
        for length in range(2, self.max_cycle + 1):
            window = self._steps[-length * n:]
            if len(window) < length * n:
                break
            block = window[:length]
            if len({sig for sig, _ in block}) > 1 and all(
                window[i] == block[i % length] for i in range(len(window))
            ):
                calls = [sig for sig, _ in block]
                return LoopVerdict(kind="cycle", calls=calls, times=n,
                                   message=f"a cycle of {length} calls repeated {n} times with "
                                           f"identical results: {', '.join(c[:80] for c in calls)}")
        return None

    def reset(self) -> None:
        self._steps.clear()
