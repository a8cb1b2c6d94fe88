"""Reusable server pieces: admission line, tickets, bearer check, SSE framing, error JSON."""

from __future__ import annotations

import anyio
import pytest
from starlette.requests import Request

from whalebone.engine.serve.http import Admission, ApiError, QueueFull, check_bearer, sse


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_admission_refuses_beyond_running_plus_queue_and_frees_places_once() -> None:
    line = Admission(concurrency=1, queue=1)
    first, second = line.reserve(), line.reserve()
    with pytest.raises(QueueFull) as e:
        line.reserve()
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"

    async def go() -> list[tuple[int, int]]:
        seen = []
        async with first:
            seen.append((line.running, line.waiting))
            second.release()  # gave up while waiting
            second.release()  # twice: still freed once
            seen.append((line.running, line.waiting))
        seen.append((line.running, line.waiting))
        async with line.reserve():  # the engine is free again
            seen.append((line.running, line.waiting))
        return seen

    assert anyio.run(go) == [(1, 1), (1, 0), (0, 0), (1, 0)]


def test_a_waiting_ticket_gets_the_engine_when_the_running_one_leaves() -> None:
    line = Admission(concurrency=1, queue=4)
    order: list[str] = []

    async def use(name: str, hold: float) -> None:
        async with line.reserve():
            order.append(name)
            await anyio.sleep(hold)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(use, "a", 0.05)
            await anyio.sleep(0.01)
            tg.start_soon(use, "b", 0)
            await anyio.sleep(0.01)
            assert (line.running, line.waiting) == (1, 1)

    anyio.run(go)
    assert order == ["a", "b"] and (line.running, line.waiting) == (0, 0)


def test_bad_admission_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Admission(concurrency=0)


@pytest.mark.parametrize(("headers", "ok"), [
    ({}, False),
    ({"Authorization": "Basic abc"}, False),
    ({"Authorization": "Bearer"}, False),
    ({"Authorization": "Bearer wrong"}, False),
    ({"Authorization": "Bearer k3y"}, True),
    ({"Authorization": "bearer k3y"}, True),
])
def test_bearer_check(headers: dict[str, str], ok: bool) -> None:
    if ok:
        check_bearer(_request(headers), "k3y")
    else:
        with pytest.raises(ApiError) as e:
            check_bearer(_request(headers), "k3y")
        assert e.value.status == 401 and e.value.code == "invalid_api_key"
    check_bearer(_request(headers), None)  # no key configured: everyone is let in


def test_sse_frames_json_compactly_and_literals_as_is() -> None:
    assert sse({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
    assert sse("[DONE]") == b"data: [DONE]\n\n"


def test_error_json_has_openai_shape_and_type_by_status() -> None:
    body = ApiError(400, "bad field", param="messages[0]").body()
    assert body == {"error": {"message": "bad field", "type": "invalid_request_error",
                              "param": "messages[0]", "code": None}}
    assert ApiError(503, "down").body()["error"]["type"] == "server_error"
    assert ApiError(429, "slow").response().status_code == 429
