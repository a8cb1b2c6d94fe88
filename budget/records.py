"""The guard's log in the ledger database: extension requests, decisions, run outcomes.

Every request made at a cap is stored with its inputs before anyone decides it. Deciding is one
transaction (:meth:`DecisionBook.resolve`): the request leaves ``pending``, the decision is
logged with its inputs, cause and cost, and on approval the scope's limit is raised. So the
auditor and a person racing to decide the same request cannot both win, a frozen guard in
another process sees the outcome by reading one row, and a person's decision is recorded the
same way whether or not the guard that asked is still alive. Outcomes of finished runs feed the
base rates that every later request carries.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from pydantic import BaseModel

from whalebone.budget.ledger import Ledger, Limit, day_scope
from whalebone.budget.policy import BaseRates, ExtensionRequest, Verdict
from whalebone.core.errors import WhaleboneError

SCHEMA = """
CREATE TABLE IF NOT EXISTS extension_requests (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    scope TEXT NOT NULL,
    unit TEXT NOT NULL,
    max_step REAL NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created REAL NOT NULL,
    resolved REAL
);
CREATE INDEX IF NOT EXISTS extension_requests_session ON extension_requests(session_id, status);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    decider TEXT NOT NULL,
    decision TEXT NOT NULL,
    amount REAL NOT NULL,
    unit TEXT NOT NULL,
    reason TEXT NOT NULL,
    cause TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    tokens INTEGER NOT NULL,
    applied INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    raw TEXT NOT NULL,
    created REAL NOT NULL,
    answers TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_scope ON decisions(scope);
CREATE TABLE IF NOT EXISTS run_outcomes (
    run_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    task_kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created REAL NOT NULL
);
"""

# Scope families ``set_limit`` takes: the default new run, session, agent-day and global-day
# scopes get ("agent:NAME" too); "day" is everyone today.
FAMILIES = ("run", "session", "agent", "global")
ALIASES = {"day": "global"}

# Outcomes that count as "went on to finish" for base rates.
FINISHED = ("finished",)


class NoPendingRequest(WhaleboneError):
    """There is no extension request waiting for a decision."""


class DecisionRecord(BaseModel):
    request_id: str
    session_id: str
    run_id: str
    scope: str
    decider: str
    decision: str
    amount: float
    unit: str
    reason: str
    cause: str
    cost_usd: float
    tokens: int
    applied: bool
    created: float
    answers: str = ""  # the decider's structured answers (JSON), when it gave any


class RequestRecord(BaseModel):
    id: str
    session_id: str
    run_id: str
    scope: str
    unit: str
    max_step: float
    status: str  # pending | approved | denied
    created: float
    request: ExtensionRequest


class DecisionBook:
    """Requests, decisions and outcomes, kept in the ledger's own database."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.db = ledger.db
        self.db.executescript(SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(decisions)")}
        if "answers" not in columns:  # a ledger from before the structured questions
            self.db.execute("ALTER TABLE decisions ADD COLUMN answers TEXT NOT NULL DEFAULT ''")

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex[:16]

    def open_request(self, request: ExtensionRequest) -> None:
        with self.ledger.transaction() as db:
            db.execute("INSERT INTO extension_requests (id, session_id, run_id, agent, scope, "
                       "unit, max_step, request, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (request.request_id, request.session_id, request.run_id, request.agent,
                        request.scope, request.unit, request.max_step,
                        request.model_dump_json(), time.time()))

    def resolve(self, request_id: str, verdict: Verdict) -> bool:
        """Decide a request: log the verdict and, if it is the first, apply it.

        Returns True when this verdict decided the request (and, on approval, raised the scope's
        limit by ``verdict.amount``); False when the request had already been decided, in which
        case the verdict is still logged, with ``applied`` = 0.
        """
        with self.ledger.transaction() as db:
            row = db.execute("SELECT session_id, run_id, scope, unit, status, request FROM "
                             "extension_requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise NoPendingRequest(f"no extension request {request_id!r}")
            session_id, run_id, scope, unit, status, inputs = row
            applied = status == "pending"
            if applied:
                db.execute("UPDATE extension_requests SET status = ?, resolved = ? WHERE id = ?",
                           ("approved" if verdict.decision == "approve" else "denied",
                            time.time(), request_id))
                if verdict.decision == "approve" and verdict.amount > 0:
                    self.ledger.extend_in(db, scope, **{unit: verdict.amount})
            db.execute("INSERT INTO decisions (request_id, session_id, run_id, scope, decider, "
                       "decision, amount, unit, reason, cause, cost_usd, tokens, applied, "
                       "inputs, raw, created, answers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?, ?)",
                       (request_id, session_id, run_id, scope, verdict.decider, verdict.decision,
                        verdict.amount, unit, verdict.reason, verdict.cause, verdict.cost_usd,
                        verdict.tokens, int(applied), inputs, verdict.raw, time.time(),
                        "" if verdict.answers is None else verdict.answers.model_dump_json()))
        return applied

    def status(self, request_id: str) -> str:
        row = self.db.execute("SELECT status FROM extension_requests WHERE id = ?",
                              (request_id,)).fetchone()
        if row is None:
            raise NoPendingRequest(f"no extension request {request_id!r}")
        return str(row[0])

    def applied_decision(self, request_id: str) -> DecisionRecord | None:
        """The decision that settled a request, once there is one."""
        found = self.decisions(where="request_id = ? AND applied = 1", args=(request_id,))
        return found[0] if found else None

    def pending(self, session_id: str | None = None) -> list[RequestRecord]:
        sql = ("SELECT id, session_id, run_id, scope, unit, max_step, status, created, request "
               "FROM extension_requests WHERE status = 'pending'")
        args: tuple[Any, ...] = ()
        if session_id is not None:
            sql += " AND session_id = ?"
            args = (session_id,)
        rows = self.db.execute(sql + " ORDER BY created", args).fetchall()
        return [RequestRecord(id=r[0], session_id=r[1], run_id=r[2], scope=r[3], unit=r[4],
                              max_step=r[5], status=r[6], created=r[7],
                              request=ExtensionRequest.model_validate_json(r[8])) for r in rows]

    def decisions(self, *, where: str = "1", args: tuple[Any, ...] = ()) -> list[DecisionRecord]:
        rows = self.db.execute(
            "SELECT request_id, session_id, run_id, scope, decider, decision, amount, unit, "
            f"reason, cause, cost_usd, tokens, applied, created, answers FROM decisions WHERE "
            f"{where} "
            "ORDER BY id", args).fetchall()
        keys = list(DecisionRecord.model_fields)
        return [DecisionRecord(**dict(zip(keys, r, strict=True))) for r in rows]

    def inputs(self, request_id: str) -> dict[str, Any]:
        """What the deciders of a request were shown (the stored request)."""
        row = self.db.execute("SELECT request FROM extension_requests WHERE id = ?",
                              (request_id,)).fetchone()
        if row is None:
            raise NoPendingRequest(f"no extension request {request_id!r}")
        return dict(json.loads(row[0]))

    def extensions(self, run_id: str) -> int:
        """Approved extensions this run has had."""
        return int(self.db.execute("SELECT COUNT(*) FROM extension_requests WHERE run_id = ? "
                                   "AND status = 'approved'", (run_id,)).fetchone()[0])

    def overridden(self, scope: str) -> bool:
        """Whether a decision set this scope's limit on purpose: an approved extension, or a
        person's ``whalebone budget set SCOPE`` naming it exactly. Such a limit is kept over a
        stricter one in the config file (which otherwise wins)."""
        return self.db.execute("SELECT 1 FROM decisions WHERE scope = ? AND applied = 1 AND "
                               "(decision = 'set' OR (decision = 'approve' AND amount > 0)) "
                               "LIMIT 1", (scope,)).fetchone() is not None

    def set_limit(self, scope: str, *, usd: float | None, tokens: int | None,
                  decider: str, reason: str) -> tuple[str, Limit, bool]:
        """A person's limit (``whalebone budget set``, the daemon API): ``scope`` is an exact
        scope or a family (:data:`FAMILIES`, ``agent:NAME``, ``day``). A family sets the
        default new scopes get, and for the daily ones today's scope too; an exact scope is
        logged as a decision and kept over a stricter config. Returns the scope written, its
        limit, and whether ``scope`` named a family."""
        for name, value in (("usd", usd), ("tokens", tokens)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise WhaleboneError(f"{name} must be a non-negative number, got {value}")
        if usd is None and tokens is None:
            raise WhaleboneError("give a limit in usd and/or tokens")
        scope = ALIASES.get(scope, scope)
        if not scope or len(scope) > 200 or any(c.isspace() or not c.isprintable()
                                                for c in scope):
            raise WhaleboneError(f"bad scope name {scope[:200]!r}")
        if scope not in FAMILIES and ":" not in scope:  # a typo would cap nothing, silently
            raise WhaleboneError(
                f"unknown scope {scope!r}: a scope is a family ({', '.join(FAMILIES)}, day) "
                "or KIND:NAME, e.g. session:ID, agent:NAME, schedule:NAME (see --help)")
        ledger = self.ledger
        family = scope in FAMILIES or (scope.startswith("agent:") and scope.count(":") == 1)

        def merged(name: str, current: Limit | None) -> Limit:
            keep = current or Limit(scope=name)
            return Limit(scope=name, max_usd=keep.max_usd if usd is None else usd,
                         max_tokens=keep.max_tokens if tokens is None else tokens)

        if family:
            ledger.set_default(merged(scope, ledger.default(scope)))
            if scope not in ("global",) and not scope.startswith("agent:"):
                default = ledger.default(scope)
                assert default is not None
                return scope, default, True
            scope = day_scope(scope)  # the daily cap applies from today on
        ledger.set_limit(merged(scope, ledger.limit(scope)))
        if not family:  # a limit for this very scope: a decision, kept over the config's
            with self.ledger.transaction() as db:
                for unit, value in (("usd", usd), ("tokens", tokens)):
                    if value is not None:
                        db.execute(
                            "INSERT INTO decisions (request_id, session_id, run_id, scope, "
                            "decider, decision, amount, unit, reason, cause, cost_usd, tokens, "
                            "applied, inputs, raw, created) VALUES ('', '', '', ?, ?, 'set', "
                            "?, ?, ?, 'ok', 0, 0, 1, '{}', '', ?)",
                            (scope, decider, value, unit, reason, time.time()))
        limit = ledger.limit(scope)
        assert limit is not None
        return scope, limit, family

    def record_outcome(self, *, run_id: str, session_id: str, agent: str, task_kind: str,
                       outcome: str) -> None:
        """How a run ended ("finished", "stopped", "failed", "budget", …), for base rates."""
        with self.ledger.transaction() as db:
            db.execute("INSERT INTO run_outcomes (run_id, session_id, agent, task_kind, outcome, "
                       "created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                       "outcome = excluded.outcome, created = excluded.created",
                       (run_id, session_id, agent, task_kind, outcome, time.time()))

    def base_rates(self, task_kind: str) -> BaseRates:
        marks = ",".join("?" * len(FINISHED))
        row = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(o.outcome IN ({marks})), 0), "
            "COALESCE(SUM(e.run_id IS NOT NULL), 0), "
            f"COALESCE(SUM(e.run_id IS NOT NULL AND o.outcome IN ({marks})), 0) "
            "FROM run_outcomes o LEFT JOIN (SELECT DISTINCT run_id FROM extension_requests "
            "WHERE status = 'approved') e ON e.run_id = o.run_id WHERE o.task_kind = ?",
            (*FINISHED, *FINISHED, task_kind)).fetchone()
        return BaseRates(task_kind=task_kind, runs=row[0], finished=row[1], extended_runs=row[2],
                         extended_finished=row[3])
