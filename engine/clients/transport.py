"""One HTTP connection pool per remote engine, SSE reading, and retries around opening a stream.

A stream is retried only until its first event reaches the caller: after that, text has been
handed on and a second try would repeat it, so a failure mid-stream is reported (as
:class:`EngineUnavailable`, which a router may answer by failing over).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from whalebone.engine.base import EngineError, EngineUnavailable, Usage
from whalebone.engine.clients.retry import (
    Deadline,
    RetryPolicy,
    status_error,
    transport_error,
)


class Transport:
    """POST JSON, read server-sent events, retry what may be retried."""

    def __init__(self, base_url: str, *, where: str, api_key: str | None = None,
                 retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.where = where
        self.retry = retry or RetryPolicy()
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                        transport=transport, timeout=None)
        self.attempts_made = 0  # tries in all, across calls: lets tests and logs see retries

    def _timeout(self, deadline: Deadline) -> httpx.Timeout:
        r = self.retry
        return httpx.Timeout(connect=deadline.cap(r.connect_timeout),
                             read=deadline.cap(r.read_timeout),
                             write=deadline.cap(r.connect_timeout),
                             pool=deadline.cap(r.connect_timeout))

    async def get_json(self, path: str) -> Any:
        deadline = Deadline(self.retry.deadline)
        try:
            resp = await self.client.get(path, timeout=self._timeout(deadline))
        except httpx.HTTPError as e:
            raise transport_error(e, self.where) from None
        if resp.status_code != 200:
            raise status_error(resp.status_code, resp.content, self.where,
                               resp.headers.get("retry-after"))
        try:
            return resp.json()
        except ValueError:
            raise EngineUnavailable(f"{self.where}: {path} did not answer JSON") from None

    async def events(self, path: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST ``payload`` and yield each JSON ``data:`` event of the SSE answer."""
        deadline = Deadline(self.retry.deadline)
        failures = 0
        while True:
            deadline.check(self.where)
            yielded = False
            self.attempts_made += 1
            timeout = self._timeout(deadline)
            try:
                async with self.client.stream("POST", path, json=payload,
                                              timeout=timeout) as resp:
                    if resp.status_code != 200:
                        body = await resp.aread()
                        raise status_error(resp.status_code, body, self.where,
                                           resp.headers.get("retry-after"))
                    async for event in self._sse(resp, deadline, timeout.read or 0.0):
                        yielded = True
                        yield event
                    return
            except httpx.HTTPError as e:
                error: EngineError = transport_error(e, self.where)
            except EngineError as e:
                error = e
            if yielded or not error.retryable:
                raise error
            failures += 1
            if failures >= self.retry.attempts:
                raise type(error)(f"{error} (gave up after {failures} tries)")
            wait = self.retry.delay(failures, getattr(error, "retry_after", None))
            left = deadline.left()
            if left is not None and wait >= left:
                raise type(error)(f"{error} (no time left to retry before the deadline)")
            await anyio.sleep(wait)

    async def _sse(self, resp: httpx.Response, deadline: Deadline, read_bound: float
                   ) -> AsyncIterator[dict[str, Any]]:
        lines = resp.aiter_lines()
        # httpx bounds each read by the read timeout fixed when the request was sent; only
        # when the deadline is nearer than that does a read need its own (costlier) scope.
        while True:
            left = deadline.left()
            try:
                if left is not None and left < read_bound:
                    with anyio.fail_after(left):
                        line = await lines.__anext__()
                else:
                    line = await lines.__anext__()
            except StopAsyncIteration:
                raise EngineUnavailable(f"{self.where}: the stream ended without [DONE]"
                                        ) from None
            except TimeoutError:
                raise EngineUnavailable(f"{self.where}: the deadline of "
                                        f"{deadline.seconds:g}s passed mid-stream") from None
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, event names
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise EngineUnavailable(f"{self.where}: a stream event is not JSON: "
                                        f"{data[:100]!r}") from None
            if isinstance(event, dict) and isinstance(event.get("error"), dict):
                message = event["error"].get("message", "unknown error")
                raise EngineUnavailable(f"{self.where} failed mid-stream: {message}")
            if isinstance(event, dict):
                yield event

    async def aclose(self) -> None:
        await self.client.aclose()


def read_usage(raw: Any) -> Usage:
    """A ``usage`` object from DeepSeek, OpenAI, vLLM, SGLang or whalebone, in one shape.

    DeepSeek reports cache hits as ``prompt_cache_hit_tokens``; OpenAI-style servers (vLLM,
    SGLang) as ``prompt_tokens_details.cached_tokens``: read both, prefer DeepSeek's."""
    if not isinstance(raw, dict):
        return Usage()
    prompt = int(raw.get("prompt_tokens") or 0)
    details = raw.get("prompt_tokens_details") or {}
    hit = raw.get("prompt_cache_hit_tokens")
    if hit is None and isinstance(details, dict):
        hit = details.get("cached_tokens")
    hit = min(int(hit or 0), prompt)
    miss = raw.get("prompt_cache_miss_tokens")
    miss = prompt - hit if miss is None else int(miss)
    return Usage(prompt_tokens=prompt, prompt_cache_hit_tokens=hit,
                 prompt_cache_miss_tokens=miss,
                 completion_tokens=int(raw.get("completion_tokens") or 0))
