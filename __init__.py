"""whalebone: an agent runtime for DeepSeek V4.

The public surface is small and grows room by room:

- ``whalebone.dsml``   the V4 prompt codec (render, parse, stream, neutralise untrusted text)
- ``whalebone.engine`` the bundled V4 engine and clients for engines elsewhere
- ``whalebone.agent``  the persistent agent loop and the ``whalebone`` command
- ``whalebone.tools``, ``whalebone.memory``, ``whalebone.budget``, ``whalebone.tui``

The names most programs need are here::

    from whalebone import Agent, AgentConfig, open_engine
    agent = Agent(open_engine("deepseek"), store="sessions.db")
    done = agent.run_sync("summarise README.md")

Importing ``whalebone`` never imports torch: names other than the error types are loaded on
first use (the engine extra only when an engine that needs it is opened).
"""

from __future__ import annotations

import importlib
from typing import Any

from whalebone.core.deprecation import renamed
from whalebone.core.errors import WhaleboneError
from whalebone.dsml.errors import EncodeError, ParseError, PrefixBreakError

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "whalebone.agent.agent",
    "AgentConfig": "whalebone.agent.config",
    "AgentError": "whalebone.agent.agent",
    "AgentEvent": "whalebone.agent.events",
    "StepStarted": "whalebone.agent.events",
    "Reasoning": "whalebone.agent.events",
    "AnswerText": "whalebone.agent.events",
    "ToolCalled": "whalebone.agent.events",
    "ToolFinished": "whalebone.agent.events",
    "UsageReport": "whalebone.agent.events",
    "RunWarning": "whalebone.agent.events",
    "Compacted": "whalebone.agent.events",
    "Done": "whalebone.agent.events",
    "SessionStore": "whalebone.agent.store",
    "SessionInfo": "whalebone.agent.store",
    "SessionError": "whalebone.agent.store",
    "SessionBusy": "whalebone.agent.store",
    "BudgetStop": "whalebone.budget.guard",
    "CompactionError": "whalebone.agent.compaction",
    "CompactionFailed": "whalebone.agent.compaction",
    "NothingToCompact": "whalebone.agent.compaction",
    "default_tools": "whalebone.agent.tools",
    "ToolRegistry": "whalebone.tools.registry",
    "Tool": "whalebone.tools.registry",
    "ToolError": "whalebone.tools.registry",
    "open_engine": "whalebone.engine.factory",
    "Engine": "whalebone.engine.base",
    "EngineError": "whalebone.engine.base",
    "EngineUnavailable": "whalebone.engine.base",
    "EngineRequestError": "whalebone.engine.base",
    "EngineAuthError": "whalebone.engine.base",
}

__all__ = [
    "EncodeError",
    "ParseError",
    "PrefixBreakError",
    "WhaleboneError",
    "__version__",
    *sorted(_EXPORTS),
]


# Old names, kept working with a DeprecationWarning (Warning shadowed the builtin).
_RENAMED = {"Text": "AnswerText", "Warning": "RunWarning", "BudgetStopped": "BudgetStop"}
_renamed = renamed(__name__, _RENAMED)


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return _renamed(name)  # not cached: every use warns
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'whalebone' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
