"""Server pieces any whalebone HTTP service reuses: OpenAI-style errors, bearer auth, SSE
framing, admission into a bounded queue and cancellation when the client goes away.

``whalebone serve`` is built from these; the daemon reuses them so that every whalebone endpoint
fails the same way (``{"error": {"message", "type", "param", "code"}}``, as OpenAI and DeepSeek
answer) and every stream is framed the same way.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from whalebone.core.errors import WhaleboneError

T = TypeVar("T")

# The ``type`` OpenAI's clients switch on, by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "server_error",
    503: "server_error",
}


class ApiError(WhaleboneError):
    """An error answered as OpenAI-style JSON with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message,
                          "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class QueueFull(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(429, f"the engine is busy and its queue of {limit} requests is full; "
                         "retry later", code="queue_full", headers={"Retry-After": "1"})


def check_bearer(request: Request, api_key: str | None) -> None:
    """Refuse a request whose ``Authorization: Bearer`` does not match ``api_key`` (if set)."""
    if not api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key")
    # Constant-time comparison: a key must not leak through response timing.
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "incorrect API key", code="invalid_api_key")


MAX_BODY = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64  # far beyond any real request; deeper JSON is refused before it is walked


async def read_body(request: Request, max_bytes: int = MAX_BODY) -> bytearray:
    """The request body, counted as it arrives: a 413 as soon as it passes ``max_bytes`` (at
    once when Content-Length says so), so an oversized body is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(len(body), max_bytes, "at least ")
    return body  # not copied to bytes: json.loads reads a bytearray, and a copy doubles the peak


def _too_large(size: int, limit: int, prefix: str = "") -> ApiError:
    # The rest of the body is never read, so the connection cannot carry another request.
    return ApiError(413, f"request body of {prefix}{size} bytes exceeds the limit of {limit}",
                    code="body_too_large", headers={"Connection": "close"})


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0). Iterative."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


async def read_json_object(request: Request, *, max_bytes: int = MAX_BODY,
                           max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/413 that says what is wrong with it. JSON
    nested deeper than ``max_depth`` is a 400 (never a RecursionError), and the body is read
    whole first, so the connection stays usable for the next request."""
    body = await read_body(request, max_bytes)
    try:
        value = json.loads(body)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if json_depth(value) > max_depth:
        raise _too_deep(max_depth)
    return value


def _too_deep(limit: int) -> ApiError:
    return ApiError(400, f"the request body nests arrays or objects more than {limit} deep",
                    code="json_too_deep")


def sse(data: Any) -> bytes:
    """One server-sent event carrying ``data`` as compact JSON (or a literal like ``[DONE]``)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False,
                                                          separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class Admission:
    """At most ``concurrency`` requests run on the engine and ``queue`` more wait; beyond that
    a request is refused at once with 429 instead of piling up unbounded."""

    def __init__(self, concurrency: int = 1, queue: int = 16) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self.running = 0
        self.waiting = 0
        self._slots = anyio.Semaphore(concurrency)

    def reserve(self) -> Ticket:
        """Take a place in line now (429 when none is left); wait for the engine with the
        ticket."""
        if self.running + self.waiting >= self.concurrency + self.queue:
            raise QueueFull(self.queue)
        self.waiting += 1
        return Ticket(self)


class Ticket:
    """A place in an :class:`Admission` line. ``async with ticket:`` waits for the engine and
    holds it; :meth:`release` gives up a place never used. Either way the place is freed once."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._state = "waiting"

    async def __aenter__(self) -> Ticket:
        await self._admission._slots.acquire()
        self._admission.waiting -= 1
        self._admission.running += 1
        self._state = "running"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._state == "running":
            self._admission.running -= 1
            self._admission._slots.release()
            self._state = "done"

    def release(self) -> None:
        if self._state == "waiting":
            self._admission.waiting -= 1
            self._state = "done"


async def until_disconnect(receive: Receive) -> None:
    """Return when the client has gone away (its body already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``; cancel it if the client disconnects first (then raise 499)."""
    result: list[T] = []
    failure: list[BaseException] = []

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            try:
                result.append(await work())
            except Exception as e:  # re-raised bare below, not wrapped in an ExceptionGroup
                failure.append(e)
            tg.cancel_scope.cancel()

        async def watch() -> None:
            await until_disconnect(request.receive)
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        tg.start_soon(watch)
    if failure:
        raise failure[0]
    if not result:
        raise ApiError(499, "the client closed the request")
    return result[0]


class EventStream(StreamingResponse):
    """``text/event-stream`` that stops its producer as soon as the client disconnects, and
    keeps a silent stream alive.

    Starlette only notices a vanished client on the next write under ASGI 2.4; a generation
    waiting in the queue or prefilling writes nothing for a long time, so this always listens
    for the disconnect and cancels the producer (which closes the engine's stream). During such
    silences it sends an SSE comment (``: keep-alive``, as DeepSeek's API does) every
    ``keepalive`` seconds, so that proxies and clients with read timeouts do not hang up on a
    long prefill.
    """

    def __init__(self, content: AsyncIterator[bytes], *,
                 on_close: Callable[[], None] | None = None, keepalive: float = 10.0) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close
        self.keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        state = {"open": False, "last": time.monotonic()}

        async def locked_send(message: Message) -> None:
            # The producer and the heartbeat share the connection: one whole frame at a time.
            async with lock:
                await send(message)
                state["last"] = time.monotonic()
                if message["type"] == "http.response.start":
                    state["open"] = True
                elif not message.get("more_body", False):
                    state["open"] = False

        try:
            async with anyio.create_task_group() as tg:

                async def produce() -> None:
                    try:
                        await self.stream_response(locked_send)
                    except OSError:
                        pass  # the client went away mid-write
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    await until_disconnect(receive)
                    tg.cancel_scope.cancel()

                async def heartbeat() -> None:
                    while True:
                        await anyio.sleep(self.keepalive)
                        if state["open"] and time.monotonic() - state["last"] >= self.keepalive:
                            try:
                                await locked_send({"type": "http.response.body",
                                                   "body": b": keep-alive\n\n",
                                                   "more_body": True})
                            except OSError:
                                tg.cancel_scope.cancel()
                                return

                tg.start_soon(produce)
                tg.start_soon(watch)
                tg.start_soon(heartbeat)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if self._on_close is not None:
                self._on_close()


def exception_handlers(on_internal: Callable[[Exception], None]
                       ) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Starlette exception handlers that answer every failure as error JSON: an
    :class:`ApiError` as itself, routing errors (404, 405) in the same shape, and anything
    unhandled as a 500 after ``on_internal`` has logged it."""
    from starlette.exceptions import HTTPException

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}
        return ApiError(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                        code="not_found" if exc.status_code == 404 else None).response()

    async def internal(_: Request, exc: Exception) -> Response:
        on_internal(exc)
        return ApiError(500, f"internal error: {type(exc).__name__}",
                        code="internal_error").response()

    return {ApiError: api_error, HTTPException: http_error, Exception: internal}
