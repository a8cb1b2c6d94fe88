"""The persistent agent loop, its sessions and the ``whalebone`` command line.

``Agent`` (agent.py) is the embedding API; ``AgentConfig`` (config.py) its settings; the events a
run yields are in events.py; sessions in store.py; the loop itself in loop.py, with tool running
(toolrun.py), compaction (compaction.py) and the budget hook (budgeting.py) beside it.
"""

from whalebone.agent.agent import Agent, AgentError
from whalebone.agent.budgeting import BudgetStopped
from whalebone.agent.compaction import CompactionError, CompactionFailed, NothingToCompact
from whalebone.agent.config import AgentConfig
from whalebone.agent.events import (
    AgentEvent,
    Compacted,
    Done,
    Reasoning,
    StepStarted,
    Text,
    ToolCalled,
    ToolFinished,
    UsageReport,
    Warning,
)
from whalebone.agent.store import SessionBusy, SessionError, SessionInfo, SessionStore
from whalebone.agent.tools import default_tools

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "AgentEvent",
    "BudgetStopped",
    "Compacted",
    "CompactionError",
    "CompactionFailed",
    "Done",
    "NothingToCompact",
    "Reasoning",
    "SessionBusy",
    "SessionError",
    "SessionInfo",
    "SessionStore",
    "StepStarted",
    "Text",
    "ToolCalled",
    "ToolFinished",
    "UsageReport",
    "Warning",
    "default_tools",
]
