"""When and how long to wait before trying an engine again.

Only failures that another try may cure are retried — connection refused or reset, timeouts,
429 and 5xx (:class:`EngineUnavailable`); a request the engine rejected (other 4xx, bad
credentials) fails at once. Waits grow exponentially with "full jitter" (a uniform draw below the
cap, so that many clients that failed together do not retry together), honour the server's
``Retry-After``, and never run past the call's total deadline. Cancelling the caller cancels the
wait.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import httpx

from whalebone.engine.base import (
    EngineAuthError,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
)


@dataclass
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included
    base_delay: float = 0.5  # seconds; doubled per failed try
    max_delay: float = 20.0
    deadline: float | None = 600.0  # seconds for the whole call, streaming included
    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # longest silence while a stream is open
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed tries (1 for the first)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        wait = self.rng.uniform(0, cap)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


class Deadline:
    """The time left for a call."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def check(self, what: str) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise EngineUnavailable(f"{what}: the deadline of {self.seconds:g}s passed")

    def cap(self, seconds: float) -> float:
        left = self.left()
        return seconds if left is None else max(0.001, min(seconds, left))


def error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data, dict) and isinstance(data.get("detail"), str):
            return data["detail"]  # vLLM/FastAPI
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip()
    return text[:300] or "(empty body)"


def status_error(status: int, body: bytes, where: str,
                 retry_after: str | None = None) -> EngineError:
    """The engine error an HTTP status stands for."""
    message = f"{where} answered {status}: {error_message(body)}"
    if status in (401, 403):
        return EngineAuthError(message + " (check the API key)")
    if status == 429 or status >= 500:
        err = EngineUnavailable(message)
        err.retry_after = parse_retry_after(retry_after)  # type: ignore[attr-defined]
        return err
    if status == 402:
        return EngineRequestError(message + " (the account's balance is insufficient)")
    return EngineRequestError(message)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare enough to fall back on our own backoff


def transport_error(e: httpx.HTTPError, where: str) -> EngineUnavailable:
    """A network failure as a retryable engine error that says what happened."""
    if isinstance(e, httpx.TimeoutException):
        return EngineUnavailable(f"{where}: timed out ({type(e).__name__})")
    if isinstance(e, httpx.ConnectError):
        return EngineUnavailable(f"{where}: cannot connect ({e})")
    return EngineUnavailable(f"{where}: {type(e).__name__}: {e}")
