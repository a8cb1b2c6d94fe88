"""Test helpers: run ``whalebone serve``'s app for real on a free loopback port, in a thread
with its own event loop (the engine runs there, as it would in production)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from whalebone.dsml import emit_completion
from whalebone.engine.base import GenerationRequest, StreamEvent
from whalebone.engine.scripted import ScriptedEngine
from whalebone.engine.serve.server import Server

WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]

CALL_WEATHER = emit_completion("", reasoning="I should look the weather up.",
                               tool_calls=[("get_weather", {"city": "Paris"})])
ANSWER_SUNNY = emit_completion("It is sunny in Paris.", reasoning="The tool says sunny.")


@contextmanager
def serving(engine: Any, **options: Any) -> Iterator[tuple[str, Server]]:
    """Serve ``engine``; yield (base URL, the Server object for its counters)."""
    server = Server(engine, **options)
    config = uvicorn.Config(server.app(), host="127.0.0.1", port=0, log_level="error",
                            lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        uv.should_exit = True
        uv.force_exit = True  # don't wait for keep-alive connections the test left open
        thread.join(10)


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def health(base: str) -> dict[str, Any]:
    return httpx.get(base + "/health").json()


class ObservedEngine(ScriptedEngine):
    """A scripted engine that records how each of its streams ended: "finished" or "closed"
    (cancelled or abandoned by the caller)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.outcomes: list[str] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        outcome = "closed"
        try:
            async for event in super().stream(request):
                if event.type == "finished":
                    outcome = "finished"
                yield event
        finally:
            self.outcomes.append(outcome)


def sse_events(lines: Iterator[str]) -> list[Any]:
    """The JSON payloads of an SSE body, up to [DONE] (kept as the string)."""
    import json

    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@contextmanager
def replaying(replies: list[tuple[int, dict[str, str], bytes]]) -> Iterator[tuple[str, list]]:
    """A real HTTP server that answers each POST with the next canned reply (status, headers,
    body) — the shapes other servers send (DeepSeek's quirks, 429s, 5xx). Yields (base URL,
    the JSON bodies it received)."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[Any] = []
    queue = list(replies)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            received.append(json.loads(self.rfile.read(length) or b"null"))
            status, headers, body = queue.pop(0) if queue else (500, {}, b"no reply left")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()


def sse_body(*events: Any) -> bytes:
    import json

    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode()
                    for e in events)


@contextmanager
def silent_port() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung server)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def dead_port() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
