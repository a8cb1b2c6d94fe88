"""The spend guard: hard limits before every model call, extensions decided by an auditor.

``BudgetGuard`` (guard.py) reserves each call's worst case in the SQLite ``Ledger``
(ledger.py) across the run, session, agent-day and global-day scopes; at a cap it freezes the
worker and has an ``Auditor`` (auditor.py, a separate engine prompted fresh with objective
``RunFacts`` only), a person (``whalebone budget approve|deny``) or the policy decide, logging
every decision in the ``DecisionBook`` (records.py).
"""

from whalebone.budget.auditor import Auditor
from whalebone.budget.guard import BudgetGuard, BudgetStop, Ticket
from whalebone.budget.ledger import Ledger, Limit, ReservationRefused
from whalebone.budget.policy import BudgetPolicy, CallPlan, CommandRun, RunFacts, Verdict
from whalebone.budget.records import DecisionBook
from whalebone.core.deprecation import renamed

__all__ = [
    "Auditor",
    "BudgetGuard",
    "BudgetPolicy",
    "BudgetStop",
    "CallPlan",
    "CommandRun",
    "DecisionBook",
    "Ledger",
    "Limit",
    "ReservationRefused",
    "RunFacts",
    "Ticket",
    "Verdict",
]

# BudgetExceeded read as "the run's budget is exceeded" (that is BudgetStop); it is a
# reservation the ledger refused.
__getattr__ = renamed(__name__, {"BudgetExceeded": "ReservationRefused"})
