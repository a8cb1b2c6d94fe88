"""Clients for engines elsewhere, all behind the one engine interface.

- :class:`ChatEngine` / :class:`DeepSeekEngine` — DeepSeek's API or any OpenAI-compatible chat
  endpoint (``/chat/completions``); the answer is re-emitted in V4 completion form.
- :class:`RawCompletionEngine` — ``/v1/completions`` of vLLM, SGLang or ``whalebone serve``: the
  exact prompt whalebone rendered goes over the wire, so the bytes and the server's prefix cache
  stay ours to keep stable.
- :class:`RetryPolicy` — backoff with jitter on 429/5xx/timeouts under a total deadline.
- :class:`Router` (``router``) — tiers of engines, failover, sessions kept on the engine that
  holds their cache.

Nothing here is imported by ``import whalebone.engine``: httpx loads only when a client is made.
"""

from whalebone.engine.clients.deepseek import ChatEngine, DeepSeekEngine
from whalebone.engine.clients.raw import RawCompletionEngine
from whalebone.engine.clients.retry import RetryPolicy
from whalebone.engine.clients.router import Router

__all__ = ["ChatEngine", "DeepSeekEngine", "RawCompletionEngine", "RetryPolicy", "Router"]
