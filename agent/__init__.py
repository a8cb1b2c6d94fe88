"""The persistent agent loop, its sessions and the ``whalebone`` command line.

``Agent`` (agent.py) is the embedding API; ``AgentConfig`` (config.py) its settings; the events a
run yields are in events.py; sessions in store.py; the loop itself in loop.py, with tool running
(toolrun.py), compaction (compaction.py) and the budget hook (budgeting.py) beside it.
"""

from whalebone.agent.agent import Agent, AgentError
from whalebone.agent.compaction import CompactionError, CompactionFailed, NothingToCompact
from whalebone.agent.config import AgentConfig
from whalebone.agent.events import (
    AgentEvent,
    AnswerText,
    Compacted,
    Done,
    Reasoning,
    RunWarning,
    StepStarted,
    ToolCalled,
    ToolFinished,
    UsageReport,
)
from whalebone.agent.store import SessionBusy, SessionError, SessionInfo, SessionStore
from whalebone.agent.tools import default_tools
from whalebone.core.deprecation import renamed

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentError",
    "AgentEvent",
    "AnswerText",
    "Compacted",
    "CompactionError",
    "CompactionFailed",
    "Done",
    "NothingToCompact",
    "Reasoning",
    "RunWarning",
    "SessionBusy",
    "SessionError",
    "SessionInfo",
    "SessionStore",
    "StepStarted",
    "ToolCalled",
    "ToolFinished",
    "UsageReport",
    "default_tools",
]

__getattr__ = renamed(__name__, {"Text": "AnswerText", "Warning": "RunWarning",
                                 "BudgetStopped": "whalebone.budget.guard:BudgetStop"})
