"""Opening the engine a chat runs on, from a spec string.

Every spec goes to the engine room's :func:`~whalebone.engine.factory.open_engine`, so the chat
names engines the way the rest of whalebone does, ``scripted:FILE`` included: it replays
completions from a file through a real :class:`~whalebone.engine.scripted.ScriptedEngine`
(demos, the tmux smoke test, reproducing a session without a model). The file is one JSON list
of completions or JSON lines (see :func:`~whalebone.engine.scripted.load_script`); query
parameters tune the replay: ``scripted:demo.jsonl?delay=0.02&model=deepseek-v4-flash``.
"""

from __future__ import annotations

from typing import Any

from whalebone.core.errors import WhaleboneError
from whalebone.engine.factory import EngineSpecError, open_engine


class ChatEngineError(WhaleboneError):
    """An engine spec that cannot be opened (bad spec, unreadable script, no checkpoint)."""


def open_chat_engine(spec: str, options: dict[str, Any] | None = None) -> Any:
    """An engine for ``spec``; raises :class:`ChatEngineError` (or the engine's own
    WhaleboneError) with a message a person can act on. ``options`` (the settings file's
    ``engine_options``) go to the engine; a scripted spec's own ``?options`` win over them."""
    try:
        return open_engine(spec, **(options or {}))
    except EngineSpecError as e:
        raise ChatEngineError(str(e)) from None
