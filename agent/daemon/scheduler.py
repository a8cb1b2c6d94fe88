"""Schedules and heartbeats: interval or cron-style ticks that submit jobs, and the cheap
pre-check that keeps an idle agent at zero cost.

A schedule ticks ``every`` N seconds or on a ``cron`` expression (minute hour day-of-month month
day-of-week, in UTC; ``*``, ``*/n``, ``a-b``, ``a-b/n`` and lists; ranges in day-of-week allow
0 or 7 for Sunday; as in cron, when both day fields are restricted either may match). At a tick
a schedule whose previous job is still queued or running is skipped (ticks never pile up), a
stopped one (its budget ran out) does nothing, and a heartbeat (``watch`` or ``check``) first
takes a fingerprint: the watched files' names, sizes and modification times, or the check
command's exit status and output. Only when the fingerprint differs from the last tick's is a
job submitted; otherwise the tick is counted as idle and no model is called. The first tick of a
heartbeat only records the fingerprint (nothing has changed "since last time" yet) unless
``run_first`` is set. State (fingerprint, next due time, tick counts, stop reason) lives in the
job database, so a restart neither re-runs a tick nor forgets a change.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from whalebone.agent.daemon.config import DaemonConfigError, ScheduleConfig
from whalebone.agent.daemon.jobs import JobQueue, ScheduleState

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("weekday", 0, 7))


class Cron:
    """A five-field cron expression, evaluated in UTC at minute resolution."""

    def __init__(self, expr: str) -> None:
        parts = expr.split()
        if len(parts) != 5:
            raise DaemonConfigError(f"cron {expr!r}: five fields (minute hour day month "
                                    "weekday)")
        self.expr = expr
        sets = [self._field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS,
                                                                          strict=True)]
        self.minutes, self.hours, self.days, self.months, weekdays = sets
        self.weekdays = {d % 7 for d in weekdays}  # 7 is Sunday too
        self.day_any, self.weekday_any = parts[2] == "*", parts[4] == "*"

    @staticmethod
    def _field(text: str, name: str, lo: int, hi: int) -> set[int]:
        out: set[int] = set()
        for item in text.split(","):
            base, _, step_text = item.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if base == "*":
                    a, b = lo, hi
                elif "-" in base:
                    a, b = (int(x) for x in base.split("-", 1))
                else:
                    a = b = int(base)
                    if step_text:
                        b = hi
            except ValueError:
                raise DaemonConfigError(f"cron field {name} {text!r} is not understood"
                                        ) from None
            if step < 1 or not lo <= a <= b <= hi:
                raise DaemonConfigError(f"cron field {name} {text!r} is out of range "
                                        f"{lo}-{hi}")
            out.update(range(a, b + 1, step))
        return out

    def _day_ok(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.day_any or self.weekday_any:
            return dom and dow
        return dom or dow  # cron's rule: either restricted day field may match

    def next_after(self, when: float) -> float:
        """The first matching minute strictly after ``when`` (a UNIX time)."""
        t = dt.datetime.fromtimestamp(when, dt.UTC).replace(second=0, microsecond=0)
        t += dt.timedelta(minutes=1)
        limit = t + dt.timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
                continue
            return t.timestamp()
        raise DaemonConfigError(f"cron {self.expr!r} never matches")


def next_due(schedule: ScheduleConfig, after: float) -> float:
    if schedule.cron is not None:
        return Cron(schedule.cron).next_after(after)
    assert isinstance(schedule.every, float)
    return after + schedule.every


def fingerprint(schedule: ScheduleConfig, workspace: Path) -> str:
    """What a heartbeat compares between ticks (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    for pattern in schedule.watch:
        # glob.glob on names (root_dir) is several times cheaper than Path.glob per tick.
        for name in sorted(glob.glob(pattern, root_dir=workspace, recursive=True)):
            try:
                st = os.stat(os.path.join(workspace, name))
            except OSError:
                continue  # vanished between glob and stat: the next tick sees it gone
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if schedule.check is not None:
        try:
            proc = subprocess.run(["/bin/sh", "-c", schedule.check], cwd=workspace,
                                  capture_output=True, timeout=schedule.check_timeout,
                                  stdin=subprocess.DEVNULL)
            digest.update(f"exit {proc.returncode}\n".encode() + proc.stdout)
        except subprocess.TimeoutExpired:
            digest.update(b"timeout")
    return digest.hexdigest()


Submit = Callable[[ScheduleConfig], None]
Log = Callable[..., None]


class Scheduler:
    """Ticks every configured schedule that is due (call :meth:`tick` often)."""

    def __init__(self, queue: JobQueue, submit: Submit, log: Log) -> None:
        self.queue = queue
        self.submit = submit
        self.log = log

    async def tick(self, schedules: list[ScheduleConfig], workspace: Path,
                   now: float | None = None) -> None:
        for schedule in schedules:
            await self._tick_one(schedule, workspace, time.time() if now is None else now)

    async def _tick_one(self, s: ScheduleConfig, workspace: Path, now: float) -> None:
        state = self.queue.schedule_state(s.name)
        if state.next_due is None:  # first sight: the first tick is one period from now
            state.next_due = now if s.heartbeat else next_due(s, now)
            self.queue.save_schedule(state)
        if now < state.next_due or state.status == "stopped":
            return
        state.next_due = next_due(s, now)
        state.ticks += 1
        state.last_tick = now
        if self.queue.active(s.name):
            self._save(state, s, "busy", "the previous job is still queued or running")
            return
        if s.heartbeat:
            new = await anyio.to_thread.run_sync(fingerprint, s, workspace)
            first = state.fingerprint is None
            changed = not first and new != state.fingerprint
            state.fingerprint = new
            if not (changed or (first and s.run_first)):
                state.idle_ticks += 1
                self._save(state, s, "idle", "first fingerprint recorded" if first
                           else "nothing changed: no model call")
                return
        state.runs += 1
        self.queue.save_schedule(state)  # before submitting: a crash never repeats a tick
        self.submit(s)
        self.log("schedule_tick", schedule=s.name, outcome="submitted", tick=state.ticks)

    def _save(self, state: ScheduleState, s: ScheduleConfig, outcome: str, message: str
              ) -> None:
        self.queue.save_schedule(state)
        self.log("schedule_tick", schedule=s.name, outcome=outcome, tick=state.ticks,
                 message=message)
