"""Retry policy, HTTP status to engine error, usage reading from every server's shape."""

from __future__ import annotations

import random

import pytest

from whalebone.engine.base import EngineAuthError, EngineRequestError, EngineUnavailable
from whalebone.engine.clients.retry import Deadline, RetryPolicy, status_error
from whalebone.engine.clients.transport import read_usage


def test_backoff_is_jittered_below_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, rng=random.Random(7))
    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.delay(failures) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2  # spread, not fixed


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=5.0)
    assert policy.delay(1, retry_after=3.0) >= 3.0
    assert policy.delay(1, retry_after=60.0) == 5.0


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (401, EngineAuthError, False), (403, EngineAuthError, False),
    (400, EngineRequestError, False), (402, EngineRequestError, False),
    (422, EngineRequestError, False), (429, EngineUnavailable, True),
    (500, EngineUnavailable, True), (503, EngineUnavailable, True),
])
def test_statuses_map_to_engine_errors(status: int, kind: type, retryable: bool) -> None:
    err = status_error(status, b'{"error": {"message": "why"}}', "api", "2")
    assert type(err) is kind and err.retryable is retryable
    assert str(err).startswith(f"api answered {status}: why")


def test_error_messages_come_from_any_body_shape() -> None:
    assert "boom" in str(status_error(500, b'{"detail": "boom"}', "vllm"))
    assert "plain text" in str(status_error(502, b"plain text", "proxy"))
    assert "(empty body)" in str(status_error(502, b"", "proxy"))
    assert status_error(429, b"", "x", "1.5").retry_after == 1.5  # type: ignore[attr-defined]


def test_deadline_caps_timeouts_and_expires() -> None:
    assert Deadline(None).left() is None and Deadline(None).cap(30) == 30
    d = Deadline(0.0)
    assert d.cap(30) == 0.001
    with pytest.raises(EngineUnavailable, match="deadline of 0s passed"):
        d.check("api")


@pytest.mark.parametrize(("raw", "hit", "miss"), [
    ({"prompt_tokens": 100, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36,
      "prompt_tokens_details": {"cached_tokens": 64}}, 64, 36),  # DeepSeek
    ({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 80}}, 80, 20),  # vLLM
    ({"prompt_tokens": 100, "prompt_tokens_details": None}, 0, 100),  # no cache report
    ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 99}}, 10, 0),  # clamp
])
def test_usage_is_read_from_deepseek_and_openai_shapes(raw: dict, hit: int, miss: int) -> None:
    usage = read_usage({**raw, "completion_tokens": 5})
    assert (usage.prompt_cache_hit_tokens, usage.prompt_cache_miss_tokens) == (hit, miss)
    assert usage.completion_tokens == 5
    assert read_usage(None).prompt_tokens == 0
