"""Engines: the bundled V4 engine (PyTorch) and clients for engines elsewhere.

Everything here implements :class:`Engine` (``whalebone.engine.base``). Names are loaded on first
use, so ``import whalebone.engine`` imports neither torch nor httpx nor starlette::

    from whalebone.engine import open_engine
    engine = open_engine("deepseek:deepseek-v4-flash")   # or "vllm:http://gpu1:8000", …

The modules, by job:

- the interface: ``base`` (requests, streamed deltas, DeepSeek-shaped usage, errors),
  ``factory`` (engine specs), ``router`` (tiers, failover, sticky sessions), ``prices``,
  ``scripted`` (replays fixed completions: tests, demos, evaluations);
- the V4 model, readable module by module: ``config`` (V4's inference-config keys, presets),
  ``layers`` (RMSNorm, RoPE/YaRN), ``attention`` (window, compressors, lightning indexer, sink),
  ``moe``, ``hyper`` (hyper-connections), ``model``, ``state`` (what a sequence carries),
  ``weights`` and ``quant`` (V4 checkpoints, FP8/FP4), ``fidelity`` (logits to hold against
  V4's own inference code);
- the bundled engine's runtime: ``bundled``, ``prefix_cache`` (snapshots on disk),
  ``sampling``, ``vocab`` (a small model's ids mapped to V4's), ``progress``; the shipped
  checkpoint in ``checkpoints/`` (trained by the top-level ``whalebone.training`` room);
- engines elsewhere: ``clients/`` (DeepSeek/OpenAI chat, raw completions for vLLM/SGLang,
  retries);
- serving: ``server`` (``whalebone serve``), ``chat_request``/``chat_response`` (OpenAI shapes),
  ``http`` (auth, errors, SSE, the bounded queue; shared with the daemon), ``openapi``, ``cli``.
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
    "Router": "whalebone.engine.router",
    "ChatEngine": "whalebone.engine.clients.deepseek",
    "DeepSeekEngine": "whalebone.engine.clients.deepseek",
    "RawCompletionEngine": "whalebone.engine.clients.raw",
    "RetryPolicy": "whalebone.engine.clients.retry",
    "ScriptedEngine": "whalebone.engine.scripted",
    "BundledEngine": "whalebone.engine.bundled",
    "create_app": "whalebone.engine.server",
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
