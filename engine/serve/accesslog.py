"""One line per request for ``whalebone serve``: what came in, how it ended, what it cost.

    POST /v1/chat/completions 200 312 tokens (256 cached) +41 out 830 ms

Logged at INFO (``whalebone serve``'s default level) on the ``whalebone.serve`` logger, when
the response's last byte is sent — for a stream, after its ``[DONE]``; a client that left
shows the status it was sent and ``(client left)``. Handlers put the generation's ``Usage`` in
``request.state.usage``; requests without one (models, health, refusals) log no tokens. The
path is logged without its query string, and no header or body ever is: a log is not a place
for keys or conversations.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("whalebone.serve")


class AccessLog:
    """ASGI middleware: one INFO line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        ended = False

        async def sending(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(line(scope, status, ended, time.perf_counter() - started))


def line(scope: Scope, status: int, ended: bool, seconds: float) -> str:
    usage: Any = scope.get("state", {}).get("usage")
    parts = [scope.get("method", "?"), scope.get("path", "?"), str(status or "-")]
    if usage is not None:
        parts.append(f"{usage.prompt_tokens} tokens ({usage.prompt_cache_hit_tokens} cached) "
                     f"+{usage.completion_tokens} out")
    parts.append(f"{seconds * 1000:.0f} ms")
    if not ended:
        parts.append("(client left)")
    return " ".join(parts)
