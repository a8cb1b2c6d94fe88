"""The root of every error whalebone raises on purpose, and the map of its hierarchy.

It lives in the bottom room so that every room can raise and catch it without importing the
codec (or anything else above it). Each room defines its own errors beside the code that raises
them and roots them here; ``whalebone`` re-exports the names programs catch most::

    WhaleboneError
    ├── EncodeError, ParseError, PrefixBreakError        dsml/errors.py  (also ValueError)
    ├── TokenizerUnavailable                             dsml/tokenizer.py (also ImportError)
    ├── EngineError                                      engine/base.py
    │   ├── EngineUnavailable
    │   ├── EngineRequestError ── EngineAuthError, EngineSpecError
    │   └── PrefixCacheError, VocabError, SamplingError, ScriptExhausted
    ├── ModelConfigError, CheckpointError, StateError,   engine/…        (also ValueError)
    │   ModelInputError, FidelityError
    ├── UnknownPrice                                     engine/prices.py (also KeyError)
    ├── ApiError ── QueueFull                            engine/http.py
    ├── ToolError ── PathError ── PathRefused;           tools/
    │   CalculatorError; McpUnavailable, McpConfigError
    ├── BudgetStop (a run stops: no extension granted;   budget/
    │   BudgetStopped before), TicketError,
    │   BudgetExceeded (a reservation over a limit, the guard's), NoPendingRequest
    ├── AgentError ── CompactionError ── NothingToCompact, CompactionFailed
    ├── SessionError ── SessionBusy                      agent/store.py
    ├── SettingsError                                    agent/settings.py
    ├── DaemonConfigError, JobError, DaemonBusy          agent/daemon/
    └── ChatEngineError                                  tui/engines.py

A front end turns any of them into one line and a documented exit code; anything that is not a
WhaleboneError is a bug, not a refusal.
"""

from __future__ import annotations


class WhaleboneError(Exception):
    """Base class of every error whalebone raises on purpose."""
