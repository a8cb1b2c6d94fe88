"""Engines: the bundled V4 engine (PyTorch) and clients for engines elsewhere.

Everything here implements :class:`Engine` (``whalebone.engine.base``). Names are loaded on first
use, so ``import whalebone.engine`` imports neither torch nor httpx nor starlette::

    from whalebone.engine import open_engine
    engine = open_engine("deepseek:deepseek-v4-flash")   # or "vllm:http://gpu1:8000", …

The rooms inside, by job:

- the interface, here: ``base`` (requests, streamed deltas, DeepSeek-shaped usage, errors),
  ``factory`` (engine specs: the one way to open any engine), ``prices``, ``scripted``
  (replays fixed completions: tests, demos, evaluations);
- ``v4/`` — the V4 model, module by module (config, layers, attention, moe, hyper, model,
  state, weights, quant, fidelity);
- ``runtime/`` — the bundled engine around it (bundled, prefix_cache, cache_files,
  snapshot_plan, sampling, vocab, progress); the shipped checkpoint in ``checkpoints/``
  (trained by the top-level ``whalebone.training`` room);
- ``clients/`` — engines elsewhere (DeepSeek/OpenAI chat, raw completions for vLLM/SGLang,
  retries) and the ``router`` over them;
- ``serve/`` — ``whalebone serve`` (server, chat_request/chat_response, http, guard,
  accesslog, openapi, cli).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "whalebone.engine.base",
    "GenerationRequest": "whalebone.engine.base",
    "SamplingParams": "whalebone.engine.base",
    "Usage": "whalebone.engine.base",
    "TextDelta": "whalebone.engine.base",
    "Finished": "whalebone.engine.base",
    "EngineError": "whalebone.engine.base",
    "EngineUnavailable": "whalebone.engine.base",
    "EngineRequestError": "whalebone.engine.base",
    "EngineAuthError": "whalebone.engine.base",
    "open_engine": "whalebone.engine.factory",
    "EngineSpecError": "whalebone.engine.factory",
    "Router": "whalebone.engine.clients.router",
    "ChatEngine": "whalebone.engine.clients.deepseek",
    "DeepSeekEngine": "whalebone.engine.clients.deepseek",
    "RawCompletionEngine": "whalebone.engine.clients.raw",
    "RetryPolicy": "whalebone.engine.clients.retry",
    "ScriptedEngine": "whalebone.engine.scripted",
    "BundledEngine": "whalebone.engine.runtime.bundled",
    "create_app": "whalebone.engine.serve.server",
    "PriceTable": "whalebone.engine.prices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'whalebone.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
