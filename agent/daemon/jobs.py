"""The job queue: one SQLite database (WAL) of jobs, their events and the schedules' state.

Any process may submit (the daemon's API, ``whalebone submit``, a Python service); only the
daemon claims. A claim is one ``BEGIN IMMEDIATE`` transaction that moves the oldest queued job to
``running``, so a job is never started twice. A job is a session: the session is created (and
its id committed to the job) before the agent's first step, so a job cut short by a crash or a
SIGTERM is put back in the queue on the next start and resumes its session where the store says
it stopped, never from the beginning.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from whalebone.agent.config import AgentConfig
from whalebone.core.errors import WhaleboneError
from whalebone.core.home import private_dir
from whalebone.core.sqlite import connect, transaction, unique_prefix
from whalebone.tools.redact import redact, redact_data

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    engine TEXT NOT NULL DEFAULT '',
    schedule TEXT NOT NULL DEFAULT '',
    options TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued',
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    answer TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    cache_hit_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    price REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE TABLE IF NOT EXISTS job_events (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'active',
    reason TEXT NOT NULL DEFAULT '',
    fingerprint TEXT,
    next_due REAL,
    ticks INTEGER NOT NULL DEFAULT 0,
    idle_ticks INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    last_tick REAL,
    updated REAL NOT NULL
);
"""

JobStatus = Literal["queued", "running", "done", "stopped", "budget", "failed", "cancelled"]
TERMINAL = ("done", "stopped", "budget", "failed", "cancelled")
# How a run's Done.reason ends its job.
STATUS_OF_REASON: dict[str, JobStatus] = {
    "answer": "done", "budget": "budget", "error": "failed", "cancelled": "cancelled",
    "max_steps": "stopped", "loop": "stopped", "parse_retries": "stopped"}
JOB_OPTIONS = ("max_steps", "thinking")  # per-job overrides a submitter may give


class JobError(WhaleboneError):
    """No such job, or a job that cannot be submitted or changed as asked."""


class Job(BaseModel):
    id: str
    task: str
    engine: str = Field("", description="engine spec; empty: the daemon's")
    schedule: str = Field("", description="the schedule that submitted it, or empty")
    options: dict[str, Any] = {}
    status: JobStatus
    reason: str = Field("", description="the run's stop reason (answer, budget, max_steps, "
                        "loop, error, …), or no_engine, busy, interrupted")
    message: str = Field("", description="why it stopped, for a person")
    answer: str = ""
    session_id: str = ""
    attempts: int = Field(0, description="times the job was started (restarts resume its "
                          "session)")
    crashes: int = Field(0, description="times a daemon died while running it; past the "
                         "config's max_crashes it is given up")
    cancel: bool = False
    steps: int = 0
    prompt_tokens: int = 0
    cache_hit_tokens: int = 0
    completion_tokens: int = 0
    price: float = Field(0.0, description="USD")
    created: float
    started: float | None = None
    finished: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class ScheduleState(BaseModel):
    name: str
    status: Literal["active", "stopped"] = "active"
    reason: str = Field("", description="why it stopped (its budget)")
    fingerprint: str | None = None
    next_due: float | None = None
    ticks: int = 0
    idle_ticks: int = Field(0, description="ticks whose pre-check found no change: no model "
                            "call")
    runs: int = 0  # jobs submitted
    last_tick: float | None = None


_JOB_COLUMNS = list(Job.model_fields)


class JobQueue:
    """All jobs of one database file. Safe to use from several processes at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            private_dir(self.path.parent)
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.db)

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, task: str, *, engine: str = "", schedule: str = "",
               options: dict[str, Any] | None = None) -> Job:
        """Queue a job; it runs once the daemon has a free slot."""
        if not isinstance(task, str) or not task.strip():
            raise JobError("a job needs a task: non-empty text")
        if not isinstance(engine, str):
            raise JobError("engine must be an engine spec (text)")
        options = dict(options or {})
        unknown = sorted(set(options) - set(JOB_OPTIONS))
        if unknown:
            raise JobError(f"unknown job options {unknown} (known: {', '.join(JOB_OPTIONS)})")
        try:
            AgentConfig.model_validate(options)
        except ValidationError as e:
            errors = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise JobError(f"invalid job options: {errors}") from None
        jid = uuid.uuid4().hex[:12]
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, task, engine, schedule, options, created, updated)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (jid, redact(task), engine, schedule, json.dumps(options), now, now))
        return self.get(jid)

    def _row(self, row: tuple[Any, ...]) -> Job:
        data = dict(zip(_JOB_COLUMNS, row, strict=True))
        data["options"] = json.loads(data["options"])
        data["cancel"] = bool(data["cancel"])
        return Job.model_validate(data)

    def resolve(self, ref: str) -> str:
        """The full id of the one job whose id is ``ref`` or starts with it."""
        return unique_prefix(self.db, "jobs", ref, JobError, "job")

    def get(self, jid: str) -> Job:
        row = self.db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id = ?",
                              (jid,)).fetchone()
        if row is None:
            raise JobError(f"no job {jid!r}")
        return self._row(row)

    def list(self, *, status: str | None = None, schedule: str | None = None,
             limit: int = 100) -> list[Job]:
        """Most recent first."""
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE 1"
        args: list[Any] = []
        if status:
            sql += " AND status = ?"
            args.append(status)
        if schedule:
            sql += " AND schedule = ?"
            args.append(schedule)
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        args.append(max(1, min(int(limit), 10_000)))
        return [self._row(r) for r in self.db.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        return {s: n for s, n in self.db.execute("SELECT status, COUNT(*) FROM jobs "
                                                 "GROUP BY status")}

    def claim(self) -> Job | None:
        """Take the oldest queued job for running (atomically), or None."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' AND cancel = 0 "
                             "ORDER BY created, rowid LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                       "started = COALESCE(started, ?), updated = ? WHERE id = ?",
                       (now, now, row[0]))
        return self.get(row[0])

    def set_session(self, jid: str, session_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET session_id = ?, updated = ? WHERE id = ?",
                       (session_id, time.time(), jid))

    def add_usage(self, jid: str, *, prompt_tokens: int, cache_hit_tokens: int,
                  completion_tokens: int, price: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET prompt_tokens = prompt_tokens + ?, cache_hit_tokens = "
                       "cache_hit_tokens + ?, completion_tokens = completion_tokens + ?, "
                       "price = price + ?, updated = ? WHERE id = ?",
                       (prompt_tokens, cache_hit_tokens, completion_tokens, price, time.time(),
                        jid))

    def finish(self, jid: str, status: JobStatus, *, reason: str = "", message: str = "",
               answer: str = "", steps: int | None = None) -> None:
        """End a job (``status`` terminal) or hand it back to the queue (``queued``).
        ``steps`` is the job's model turns so far, over every attempt (never lowered)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, reason = ?, message = ?, answer = ?, "
                       "steps = max(steps, ?), finished = ?, updated = ? WHERE id = ?",
                       (status, reason, redact(message), redact(answer), steps or 0,
                        now if status in TERMINAL else None, now, jid))

    def cancel(self, jid: str) -> Job:
        """Cancel a job: a queued one at once; a running one is flagged and the daemon stops
        it at once (its session keeps every committed step). A finished job is left as it is."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
            if row is None:
                raise JobError(f"no job {jid!r}")
            if row[0] == "queued":
                db.execute("UPDATE jobs SET status = 'cancelled', cancel = 1, reason = "
                           "'cancelled', message = 'cancelled before it started', finished = ?,"
                           " updated = ? WHERE id = ?", (now, now, jid))
            elif row[0] == "running":
                db.execute("UPDATE jobs SET cancel = 1, updated = ? WHERE id = ?", (now, jid))
        return self.get(jid)

    def retry(self, jid: str) -> Job:
        """Queue a job that stopped (budget, limit, failure, cancel) again: it resumes its
        session where it stopped, e.g. after its budget was raised. A finished job, or one
        still queued or running, is refused."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
            if row is None:
                raise JobError(f"no job {jid!r}")
            if row[0] not in ("stopped", "budget", "failed", "cancelled"):
                raise JobError(f"job {jid} is {row[0]}: only a stopped, budget-stopped, failed "
                               "or cancelled job can be retried")
            db.execute("UPDATE jobs SET status = 'queued', reason = '', message = '', "
                       "cancel = 0, finished = NULL, updated = ? WHERE id = ?", (now, jid))
        return self.get(jid)

    def cancel_requested(self, ids: list[str]) -> list[str]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [r[0] for r in self.db.execute(
            f"SELECT id FROM jobs WHERE cancel = 1 AND id IN ({marks})", ids)]

    def requeue_running(self, max_crashes: int | None = None) -> tuple[list[str], list[str]]:
        """Put jobs a dead daemon left ``running`` back in the queue (done at start, under the
        daemon's lock, so no live daemon is running them). A job that has now been running
        during more than ``max_crashes`` deaths is failed instead: it may be what kills the
        daemon, and a supervisor restarting it would otherwise loop for ever.

        Returns the ids queued again and the ids given up.
        """
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET crashes = crashes + 1 WHERE status = 'running'")
            rows = db.execute("SELECT id, crashes, session_id FROM jobs "
                              "WHERE status = 'running'").fetchall()
            queued, failed = [], []
            for jid, crashes, sid in rows:
                if max_crashes is not None and crashes > max_crashes:
                    failed.append(jid)
                    db.execute("UPDATE jobs SET status = 'failed', reason = 'crashed', "
                               "message = ?, finished = ?, updated = ? WHERE id = ?",
                               (f"the daemon died {crashes} times while running this job; "
                                f"given up (its session {sid or '-'} keeps every committed "
                                "step: whalebone sessions resume)", now, now, jid))
                else:
                    queued.append(jid)
                    db.execute("UPDATE jobs SET status = 'queued', updated = ? WHERE id = ?",
                               (now, jid))
        return queued, failed

    def active(self, schedule: str) -> bool:
        """Whether a job of ``schedule`` is queued or running (ticks never overlap)."""
        return self.db.execute("SELECT 1 FROM jobs WHERE schedule = ? AND status IN "
                               "('queued', 'running') LIMIT 1", (schedule,)).fetchone() is not None

    def prune(self, older_than: float) -> int:
        """Delete finished jobs (and their events) that ended more than ``older_than``
        seconds ago; their sessions stay in the session store. Returns how many."""
        with self._tx() as db:
            marks = ",".join("?" * len(TERMINAL))
            cur = db.execute(f"DELETE FROM jobs WHERE status IN ({marks}) AND finished < ?",
                             (*TERMINAL, time.time() - older_than))
        return int(cur.rowcount)

    # --- events -----------------------------------------------------------------------------

    def add_event(self, jid: str, event: dict[str, Any]) -> int:
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job = ?",
                             (jid,)).fetchone()[0]
            db.execute("INSERT INTO job_events (job, seq, event, created) VALUES (?, ?, ?, ?)",
                       (jid, seq, json.dumps(redact_data(event), ensure_ascii=False),
                        time.time()))
        return int(seq)

    def events(self, jid: str, after: int = 0, limit: int = 1000
               ) -> list[tuple[int, dict[str, Any]]]:
        return [(s, json.loads(e)) for s, e in self.db.execute(
            "SELECT seq, event FROM job_events WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
            (jid, after, limit))]

    # --- schedules --------------------------------------------------------------------------

    def schedule_state(self, name: str) -> ScheduleState:
        row = self.db.execute("SELECT name, status, reason, fingerprint, next_due, ticks, "
                              "idle_ticks, runs, last_tick FROM schedules WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            return ScheduleState(name=name)
        return ScheduleState(**dict(zip(ScheduleState.model_fields, row, strict=True)))

    def save_schedule(self, state: ScheduleState) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO schedules (name, status, reason, fingerprint, next_due, ticks,"
                       " idle_ticks, runs, last_tick, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
                       " ?) ON CONFLICT(name) DO UPDATE SET status = excluded.status, reason = "
                       "excluded.reason, fingerprint = excluded.fingerprint, next_due = "
                       "excluded.next_due, ticks = excluded.ticks, idle_ticks = "
                       "excluded.idle_ticks, runs = excluded.runs, last_tick = excluded.last_tick,"
                       " updated = excluded.updated",
                       (state.name, state.status, state.reason, state.fingerprint, state.next_due,
                        state.ticks, state.idle_ticks, state.runs, state.last_tick, time.time()))

    def stop_schedule(self, name: str, reason: str) -> None:
        """Stop a schedule (it ticks no more) and say why, until it is resumed."""
        state = self.schedule_state(name)
        self.save_schedule(state.model_copy(update={"status": "stopped", "reason": reason}))

    def resume_schedule(self, name: str) -> ScheduleState:
        state = self.schedule_state(name).model_copy(update={"status": "active", "reason": ""})
        self.save_schedule(state)
        return state
