"""Filesystem-scoped memory: confined to its scope, audited, searchable.

A scope is a directory of plain files (per user, per project, per agent) that a person can read
and edit. A model reaches it only through the one ``memory`` tool (Anthropic's commands: view,
create, str_replace, insert, delete, rename; plus search), whose every path is confined by
:mod:`whalebone.tools.confine`, whose every call is audited, and whose results are neutralised
and framed as data::

    from whalebone.memory import MemoryHome, memory_tool
    home = MemoryHome()                      # $WHALEBONE_HOME/memory
    agent = Agent(engine, memory=home.attach("project:whalebone", who="agent:triage"))
    # or, by hand: registry.add(memory_tool(home.scope("user:alice"), audit=home.audit))
"""

from whalebone.memory.audit import AuditEntry, AuditLog
from whalebone.memory.home import MemoryHome, check_scope_name, default_home
from whalebone.memory.index import Hit, SearchIndex, SyncReport
from whalebone.memory.scope import ALIAS, MemoryLimitError, MemoryScope, Outcome
from whalebone.memory.tool import AgentMemory, MemoryCall, memory_tool

__all__ = [
    "ALIAS",
    "AgentMemory",
    "AuditEntry",
    "AuditLog",
    "Hit",
    "MemoryCall",
    "MemoryHome",
    "MemoryLimitError",
    "MemoryScope",
    "Outcome",
    "SearchIndex",
    "SyncReport",
    "check_scope_name",
    "default_home",
    "memory_tool",
]
