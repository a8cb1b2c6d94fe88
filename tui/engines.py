"""Opening the engine a chat runs on, from a spec string.

``scripted:PATH.jsonl`` replays completions from a file through a real
:class:`~whalebone.engine.scripted.ScriptedEngine` (demos, the tmux smoke test, reproducing a
session without a model). Every other spec (``bundled``, ``deepseek:…``, ``vllm@…``) goes to the
engine room's ``open_engine`` factory, so the chat names engines the way the rest of whalebone
does.

A script file holds one completion per line, each a JSON string or an object with a
``completion`` key (blank lines and lines starting with ``#`` are skipped), or, as the engine
factory's ``scripted:FILE`` takes it, one JSON list of completion strings. Query parameters on
the spec tune the replay: ``scripted:demo.jsonl?delay=0.02&model=deepseek-v4-flash``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from whalebone.dsml.errors import WhaleboneError


class ChatEngineError(WhaleboneError):
    """An engine spec that cannot be opened (bad spec, unreadable script, no checkpoint)."""


SCRIPT_OPTIONS = {"delay": float, "delta_chars": int, "model": str, "name": str,
                  "context_window": int}


def load_script(path: str | Path) -> list[str]:
    """The completions of a script file, in order."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ChatEngineError(f"cannot read the script {str(p)!r}: {e.strerror}") from None
    whole = "\n".join(lines).strip()
    if whole.startswith("["):  # the engine factory's form: one JSON list of completions
        try:
            items = json.loads(whole)
        except json.JSONDecodeError as e:
            raise ChatEngineError(f"{p}: not a JSON list ({e.msg})") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ChatEngineError(f"{p}: a JSON list of completion strings is expected")
        lines = [json.dumps(i) for i in items]
    completions: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ChatEngineError(f"{p}:{number}: not JSON ({e.msg})") from None
        if isinstance(item, dict) and isinstance(item.get("completion"), str):
            item = item["completion"]
        if not isinstance(item, str):
            raise ChatEngineError(f"{p}:{number}: expected a JSON string or an object with "
                                  "a 'completion' string")
        completions.append(item)
    if not completions:
        raise ChatEngineError(f"the script {str(p)!r} holds no completions")
    return completions


def _script_options(query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        kind = SCRIPT_OPTIONS.get(key)
        if kind is None:
            known = ", ".join(SCRIPT_OPTIONS)
            raise ChatEngineError(f"unknown scripted-engine option {key!r} (known: {known})")
        try:
            options[key] = kind(values[-1])
        except ValueError:
            raise ChatEngineError(f"option {key}={values[-1]!r} is not a {kind.__name__}"
                                  ) from None
    return options


def open_chat_engine(spec: str, options: dict[str, Any] | None = None) -> Any:
    """An engine for ``spec``; raises :class:`ChatEngineError` (or the factory's own
    WhaleboneError) with a message a person can act on. ``options`` (the settings file's
    ``engine_options``) go to the factory's engines; a scripted spec takes its own."""
    spec = spec.strip()
    if not spec:
        raise ChatEngineError("an engine spec is empty")
    if spec.startswith("scripted:"):
        from whalebone.engine.scripted import ScriptedEngine

        path, _, query = spec.removeprefix("scripted:").partition("?")
        options = _script_options(query)
        return ScriptedEngine(load_script(path), **options)
    try:
        from whalebone.engine.factory import open_engine  # type: ignore[import-not-found]
    except ModuleNotFoundError as e:
        if e.name != "whalebone.engine.factory":
            raise
        raise ChatEngineError(
            f"engine {spec!r} cannot be opened: this build of whalebone has no engine factory "
            "yet; use --engine scripted:FILE.jsonl") from None
    try:
        return open_engine(spec, **(options or {}))
    except ImportError as e:
        raise ChatEngineError(f"engine {spec!r} needs a dependency that is not installed "
                              f"({e.name}); for the bundled engine: pip install "
                              "'whalebone[engine]'") from None
