"""Open an engine from a one-line spec: what ``--engine`` takes on the command line and what an
agent's configuration names.

=====================================  ============================================================
spec                                   engine
=====================================  ============================================================
``bundled``                            the shipped checkpoint in this process (the default)
``bundled:PATH``                       a checkpoint folder in this process
``random[:PRESET]``                    random weights of a preset shape (``micro``…): tests, benches
``scripted:FILE.jsonl[?OPTS]``         replays completions in call order (demos, tests); FILE
                                       holds one completion per line as a JSON string
                                       (``load_script``, ``examples/calculator.jsonl``); OPTS
                                       e.g. ``delay=0.02&model=deepseek-v4-flash``
``replay:FILE.jsonl[?OPTS]``           the n-th call of a session gets the n-th completion (a
                                       resumed session continues its script: daemon demos)
``deepseek[:MODEL]``                   DeepSeek's API (``DEEPSEEK_API_KEY``, ``DEEPSEEK_BASE_URL``);
                                       MODEL defaults to ``deepseek-v4-flash``
``vllm:URL`` / ``sglang:URL``          raw completions on vLLM / SGLang (whalebone renders prompts)
``whalebone:URL``                      raw completions on another ``whalebone serve``
``openai:URL``                         any OpenAI-compatible chat endpoint (premium tier); URL
                                       includes ``/v1``; needs ``model=``; key from ``api_key=`` or
                                       ``OPENAI_API_KEY``
``router:PATH``                        a :class:`Router` from a TOML file (below)
=====================================  ============================================================

Options go to the engine's constructor (``model=``, ``api_key=``, ``retry=``, ``name=``,
``context_window=``…). A router file::

    default_tier = "bulk"
    first_delta_timeout = 30            # seconds to first output before failing over

    [tiers]
    bulk = ["deepseek:deepseek-v4-flash", "vllm:http://gpu1:8000"]
    standard = ["deepseek:deepseek-v4-pro"]
    premium = [{ spec = "openai:https://api.openai.com/v1", model = "gpt-5",
                 api_key_env = "OPENAI_API_KEY" }]

An engine named in several tiers (same spec and options) is one engine, so a session keeps its
cache when its calls move between those tiers.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from whalebone.core.errors import WhaleboneError
from whalebone.engine.base import Engine, EngineError, EngineRequestError


class EngineSpecError(EngineRequestError):
    """An engine spec or router file that cannot be understood."""


KINDS = ("bundled", "random", "scripted", "replay", "deepseek", "vllm", "sglang", "whalebone",
         "openai", "router")

# What every command's --engine says (run, resume, chat, serve, submit): one text, one format.
SPEC_HELP = ("bundled (the default) | bundled:PATH | deepseek[:MODEL] | vllm:URL | sglang:URL | "
             "whalebone:URL | openai:URL | router:FILE.toml | random:PRESET | "
             "scripted:FILE.jsonl (replays completions in call order) | replay:FILE.jsonl (the "
             "n-th call of a session gets the n-th); a .jsonl script holds one completion per "
             "line as a JSON string, # lines skipped: see examples/calculator.jsonl")


# Options a scripted or replay spec takes after "?", with their types.
SCRIPT_OPTIONS = {"delay": float, "delta_chars": int, "model": str, "name": str,
                  "context_window": int}


def split_spec(spec: str) -> tuple[str, str | None]:
    if not spec.strip():
        raise EngineSpecError("an engine spec is empty")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise EngineSpecError(f"unknown engine {spec!r}: the spec starts with one of "
                              f"{', '.join(KINDS)}")
    return kind, (arg if sep and arg else None)


def open_engine(spec: str = "bundled", **options: Any) -> Engine:
    """The engine ``spec`` names (see the module's table), built with ``options``."""
    kind, arg = split_spec(spec)
    try:
        return _open(kind, arg, spec, options)
    except TypeError as e:  # an option the engine does not take
        raise EngineSpecError(f"engine {spec!r}: {e}") from None
    except ImportError as e:  # torch for the bundled engine, an HTTP client, …
        raise EngineSpecError(f"engine {spec!r} needs a dependency that is not installed "
                              f"({e.name}); for the bundled engine: pip install "
                              "'whalebone[engine]'") from None
    except EngineError:
        raise
    except WhaleboneError as e:  # an unknown preset, an unreadable checkpoint, …
        raise EngineSpecError(str(e)) from None


def _url(arg: str | None, spec: str) -> str:
    if not arg or not arg.startswith(("http://", "https://")):
        raise EngineSpecError(f"engine {spec!r} needs an http(s) URL after the colon")
    return arg


def _open(kind: str, arg: str | None, spec: str, options: dict[str, Any]) -> Engine:
    if kind == "bundled":
        from whalebone.engine.runtime.bundled import BundledEngine

        if arg is None:
            return BundledEngine.default(**options)
        return BundledEngine.from_checkpoint(arg, **options)
    if kind == "random":
        from whalebone.engine.runtime.bundled import BundledEngine

        return BundledEngine.random(arg or "micro", **options)
    if kind in ("scripted", "replay"):
        return _scripted(kind, arg, spec, options)
    if kind == "deepseek":
        from whalebone.engine.clients.deepseek import DeepSeekEngine

        if arg:
            options.setdefault("model", arg)
        return DeepSeekEngine(**options)
    if kind in ("vllm", "sglang", "whalebone"):
        from whalebone.engine.clients.raw import RawCompletionEngine

        return RawCompletionEngine(_url(arg, spec), flavour=kind, **options)
    if kind == "openai":
        from whalebone.engine.clients.deepseek import ChatEngine

        if not options.get("model"):
            raise EngineSpecError(f"engine {spec!r} needs model= (the endpoint's model name)")
        options.setdefault("api_key", os.environ.get("OPENAI_API_KEY"))
        return ChatEngine(_url(arg, spec), flavour="openai", **options)
    if arg is None:
        raise EngineSpecError("router needs a file: router:PATH.toml")
    return open_router(arg, **options)


def _script_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        kind = SCRIPT_OPTIONS.get(key)
        if kind is None:
            known = ", ".join(SCRIPT_OPTIONS)
            raise EngineSpecError(f"unknown scripted-engine option {key!r} (known: {known})")
        try:
            options[key] = kind(values[-1])
        except ValueError:
            raise EngineSpecError(f"option {key}={values[-1]!r} is not a {kind.__name__}"
                                  ) from None
    return options


def _scripted(kind: str, arg: str | None, spec: str, options: dict[str, Any]) -> Engine:
    from whalebone.engine.scripted import ReplayEngine, ScriptedEngine, load_script

    path, _, query = (arg or "").partition("?")
    if not path:
        raise EngineSpecError(f"engine {spec!r} needs a file: {kind}:FILE.json")
    options = {**options, **_script_options(query)}  # the spec's own options win
    if kind == "replay":
        return ReplayEngine(load_script(path, "replay script"),
                            label=f"replay script {Path(path).expanduser()}", **options)
    return ScriptedEngine(load_script(path), **options)


def _entry(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), str):
        raise EngineSpecError(f"{where} must be a spec string or a table with spec = \"…\"")
    options = {k: v for k, v in raw.items() if k not in ("spec", "api_key_env")}
    if "api_key_env" in raw:
        key = os.environ.get(str(raw["api_key_env"]))
        if not key:
            raise EngineSpecError(f"{where}: the environment variable {raw['api_key_env']} "
                                  "holds no API key")
        options["api_key"] = key
    return raw["spec"], options


def open_router(path: str | Path, **options: Any) -> Engine:
    """A :class:`Router` from a TOML file (format in the module docstring)."""
    from whalebone.engine.clients.router import Router

    file = Path(path).expanduser()
    try:
        config = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise EngineSpecError(f"cannot read the router file {file}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise EngineSpecError(f"the router file {file} is not valid TOML: {e}") from None
    tiers_raw = config.get("tiers")
    if not isinstance(tiers_raw, dict) or not tiers_raw:
        raise EngineSpecError(f"{file}: [tiers] must map tier names to lists of engines")
    built: dict[str, Engine] = {}  # one engine per distinct entry, shared across tiers
    tiers: dict[str, list[Engine]] = {}
    for tier, entries in tiers_raw.items():
        if not isinstance(entries, list) or not entries:
            raise EngineSpecError(f"{file}: tier {tier!r} must be a non-empty list")
        tiers[tier] = []
        for i, raw in enumerate(entries):
            spec, opts = _entry(raw, f"{file}: tiers.{tier}[{i}]")
            if split_spec(spec)[0] == "router":
                raise EngineSpecError(f"{file}: a router cannot contain a router")
            key = json.dumps([spec, opts], sort_keys=True, default=str)
            if key not in built:
                built[key] = open_engine(spec, **opts)
            tiers[tier].append(built[key])
    timeout = config.get("first_delta_timeout", options.pop("first_delta_timeout", None))
    return Router(tiers, default_tier=config.get("default_tier"),
                  first_delta_timeout=float(timeout) if timeout is not None else None,
                  **options)
