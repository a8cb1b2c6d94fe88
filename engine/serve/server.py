"""``whalebone serve``: a DeepSeek-compatible HTTP server over any :class:`Engine`.

Endpoints (documented in :mod:`whalebone.engine.serve.openapi`, served at ``GET /openapi.json``):

- ``POST /v1/chat/completions`` — OpenAI/DeepSeek chat: tools, ``tool_choice``, ``thinking``,
  ``reasoning_effort``; answers carry ``reasoning_content`` and ``tool_calls``; SSE with
  ``"stream": true``. The conversation is rendered with the V4 codec and the completion parsed
  with its tolerant parser.
- ``POST /v1/completions`` — a raw prompt, for DSML-native clients that render it themselves.
- ``GET /v1/models``, ``GET /health``.

``usage`` carries ``prompt_cache_hit_tokens``/``prompt_cache_miss_tokens`` as DeepSeek's API does,
from the engine's own prefix-cache accounting. At most ``concurrency`` generations run; ``queue``
more wait; beyond that requests get 429. A client that disconnects cancels its generation,
whether it is waiting, prefilling or streaming.

Web pages are kept out (:class:`~whalebone.engine.serve.guard.BrowserGuard`: loopback or configured
``Host`` only, no foreign ``Origin``, JSON bodies only), bodies are capped as they stream in, and
JSON nested past :data:`~whalebone.engine.serve.http.MAX_JSON_DEPTH` is a 400.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from whalebone.engine.base import (
    Engine,
    EngineAuthError,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    Finished,
    GenerationRequest,
    TextDelta,
)
from whalebone.engine.serve.accesslog import AccessLog
from whalebone.engine.serve.chat_request import read_chat, read_completion
from whalebone.engine.serve.chat_response import ChatShaper, TextShaper
from whalebone.engine.serve.guard import BrowserGuard
from whalebone.engine.serve.http import (
    MAX_BODY,
    Admission,
    ApiError,
    EventStream,
    Ticket,
    check_bearer,
    exception_handlers,
    read_json_object,
    sse,
    unless_disconnected,
)
from whalebone.engine.serve.openapi import openapi_document

log = logging.getLogger(__name__)

# Turns the start of a stream (None), a text delta or the final record into JSON chunks.
Shape = Callable[[str | Finished | None], list[dict[str, Any]]]


def engine_error(e: EngineError) -> ApiError:
    """How an engine's failure reads to the server's client."""
    if isinstance(e, EngineUnavailable):
        return ApiError(503, f"the engine is unavailable: {e}", code="engine_unavailable")
    if isinstance(e, EngineAuthError):
        # The server's own upstream credentials are wrong: not the client's fault.
        return ApiError(502, f"the engine refused the server's credentials: {e}",
                        code="upstream_auth")
    if isinstance(e, EngineRequestError):
        return ApiError(400, str(e), code="engine_rejected")
    return ApiError(500, f"the engine failed: {e}", code="engine_error")


class Server:
    """The server's state: one engine, its admission line, an optional key."""

    def __init__(self, engine: Engine, *, api_key: str | None = None, concurrency: int = 1,
                 queue: int = 16, model_name: str | None = None,
                 keepalive: float = 10.0, hosts: Sequence[str] = (), any_address: bool = False,
                 max_body: int = MAX_BODY) -> None:
        self.engine = engine
        self.hosts = tuple(hosts)  # Host names accepted besides loopback (see BrowserGuard)
        self.any_address = any_address
        self.max_body = max_body
        self.keepalive = keepalive  # seconds of stream silence before a ": keep-alive"
        self.api_key = api_key or None
        self.admission = Admission(concurrency, queue)
        # A local checkpoint is served under its name (whalebone-nano), and a request for
        # another model is a 404 (its pricing name, whalebone-local, is accepted too). An
        # engine elsewhere (a proxy, a router) takes the model names its upstream takes.
        served = getattr(engine, "served_name", None)
        self.model = model_name or served or engine.model
        self.accepts = {self.model, engine.model} if served else None
        self.served = 0
        self.cancelled = 0

    # --- plumbing ---------------------------------------------------------------------

    def _admit(self) -> Ticket:
        return self.admission.reserve()

    def _check_model(self, body: dict[str, Any]) -> None:
        """A model this server does not serve is a 404, as DeepSeek's and OpenAI's APIs say."""
        if self.accepts is not None and body.get("model") not in self.accepts:
            raise ApiError(404, f"The model {str(body.get('model'))[:100]!r} does not exist; "
                           f"this server serves {self.model!r} (GET /v1/models)",
                           code="model_not_found", param="model")

    async def _run(self, http: Request, ticket: Ticket, request: GenerationRequest,
                   feed: Callable[[str], object]) -> Finished:
        """Run ``request`` holding the engine; pass each text delta to ``feed``."""
        async with ticket, aclosing(self.engine.stream(request)) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    feed(event.text)
                elif isinstance(event, Finished):
                    self.served += 1
                    http.state.usage = event.usage  # for the access log
                    return event
        raise ApiError(500, f"the engine {self.engine.name} ended without a result")

    def _stream(self, http: Request, ticket: Ticket, request: GenerationRequest,
                shape: Shape) -> EventStream:
        """SSE over a generation: ``shape(text | Finished)`` gives the JSON chunks to send."""

        async def events() -> AsyncIterator[bytes]:
            finished = False
            answered = False  # an end (result or error) was produced: not a cancellation
            try:
                for chunk in shape(None):
                    yield sse(chunk)
                async with ticket, aclosing(self.engine.stream(request)) as stream:
                    async for event in stream:
                        for chunk in shape(event.text if isinstance(event, TextDelta)
                                           else event):
                            yield sse(chunk)
                        if isinstance(event, Finished):
                            finished = True
                            self.served += 1
                            http.state.usage = event.usage  # for the access log
                if not finished:
                    raise ApiError(500, f"the engine {self.engine.name} ended without a result")
                answered = True
                yield sse("[DONE]")
            except EngineError as e:
                answered = True
                yield sse(engine_error(e).body())
            except ApiError as e:
                answered = True
                yield sse(e.body())
            except Exception as e:  # the headers are sent: report in-band, keep serving
                answered = True
                log.exception("whalebone serve: unhandled error mid-stream")
                yield sse(ApiError(500, f"internal error: {type(e).__name__}",
                                   code="internal_error").body())
            finally:
                if not answered:
                    self.cancelled += 1  # the client left (or the server is stopping)

        def closed() -> None:
            ticket.release()  # a stream that never reached the engine frees its place

        return EventStream(events(), on_close=closed, keepalive=self.keepalive)

    # --- endpoints --------------------------------------------------------------------

    async def chat(self, http: Request) -> Response:
        check_bearer(http, self.api_key)  # before reading the body: strangers learn nothing
        body = await read_json_object(http, max_bytes=self.max_body)
        call = read_chat(body, context_window=self.engine.context_window)
        self._check_model(body)
        ticket = self._admit()
        shaper = ChatShaper(self.model, call.request.thinking_mode, call.tools)
        if call.stream:
            def shape(event: str | Finished | None) -> list[dict[str, Any]]:
                if event is None:
                    return [shaper.first_chunk(), *shaper.feed(call.prefill)]
                if isinstance(event, str):
                    return shaper.feed(event)
                return shaper.close(event)

            return self._stream(http, ticket, call.request, shape)

        async def work() -> Finished:
            shaper.feed(call.prefill)
            return await self._run(http, ticket, call.request, shaper.feed)

        finished = await self._guard(http, ticket, work)
        shaper.close(finished)
        return JSONResponse(shaper.completion(finished))

    async def completions(self, http: Request) -> Response:
        check_bearer(http, self.api_key)
        body = await read_json_object(http, max_bytes=self.max_body)
        call = read_completion(body, context_window=self.engine.context_window)
        self._check_model(body)
        ticket = self._admit()
        shaper = TextShaper(self.model)
        if call.stream:
            def shape(event: str | Finished | None) -> list[dict[str, Any]]:
                if event is None:
                    return []
                if isinstance(event, str):
                    return [shaper.chunk(event)]
                return [shaper.chunk("", event)]

            return self._stream(http, ticket, call.request, shape)
        parts: list[str] = []
        finished = await self._guard(http, ticket,
                                     lambda: self._run(http, ticket, call.request,
                                                       parts.append))
        return JSONResponse(shaper.chunk("".join(parts), finished))

    async def _guard(self, http: Request, ticket: Ticket,
                     work: Callable[[], Awaitable[Finished]]) -> Finished:
        try:
            return await unless_disconnected(http, work)
        except EngineError as e:
            raise engine_error(e) from None
        except ApiError as e:
            if e.status == 499:
                self.cancelled += 1
            raise
        finally:
            ticket.release()

    async def models(self, http: Request) -> Response:
        check_bearer(http, self.api_key)
        return JSONResponse({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "whalebone",
             "context_window": self.engine.context_window}]})

    async def health(self, http: Request) -> Response:
        # Unauthenticated on purpose: load balancers probe it; it reveals no conversation.
        a = self.admission
        return JSONResponse({"status": "ok", "engine": self.engine.name, "model": self.model,
                             "running": a.running, "queued": a.waiting,
                             "queue_limit": a.queue, "served": self.served,
                             "cancelled": self.cancelled})

    async def openapi(self, http: Request) -> Response:
        return JSONResponse(openapi_document(self.model))

    def app(self) -> Starlette:
        def internal(exc: Exception) -> None:
            log.exception("whalebone serve: unhandled error", exc_info=exc)

        routes = [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]
        guard = Middleware(BrowserGuard, hosts=self.hosts, any_address=self.any_address)
        app = Starlette(routes=routes, exception_handlers=exception_handlers(internal),
                        middleware=[Middleware(AccessLog), guard])
        app.state.server = self
        return app


def create_app(engine: Engine, **options: Any) -> Starlette:
    """The ASGI app serving ``engine`` (options as :class:`Server`)."""
    return Server(engine, **options).app()
