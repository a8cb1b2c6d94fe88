"""The headless daemon: agents that run for weeks with nobody watching, without burning money
or losing work.

Jobs come from ``whalebone submit``, the control API or Python, wait in a SQLite queue
(jobs.py), and run ``concurrency`` at a time (service.py, runner.py); each job is an agent
session, so a job cut short by SIGTERM, SIGKILL or a crash resumes where its session stopped.
Schedules and heartbeats (scheduler.py) submit jobs on an interval or a cron expression; a
heartbeat first fingerprints what it watches and calls no model when nothing changed.

From Python::

    from whalebone.agent.daemon import JobQueue, load_config
    queue = JobQueue(load_config().jobs_path)
    job = queue.submit("triage the new issues", options={"max_steps": 20})
    queue.get(job.id).status            # queued → running → done | stopped | budget | failed

The control API (api.py; 127.0.0.1 only, ``Authorization: Bearer $(cat ~/.whalebone/
daemon.token)``; the OpenAPI document at ``GET /openapi.json``)::

    curl -s localhost:8765/health
    curl -s -H "Authorization: Bearer $TOKEN" -d '{"task": "…"}' localhost:8765/jobs
    curl -sN -H "Authorization: Bearer $TOKEN" localhost:8765/jobs/ID/events      # SSE
    curl -s -H "Authorization: Bearer $TOKEN" -X POST localhost:8765/jobs/ID/cancel
    curl -s -H "Authorization: Bearer $TOKEN" -X POST localhost:8765/jobs/ID/retry   # resume
    curl -s -H "Authorization: Bearer $TOKEN" -d '{"decision": "approve", "amount": 0.5}' \\
         localhost:8765/jobs/ID/budget                  # a frozen job's budget extension

Configuration: ``$WHALEBONE_HOME/daemon.toml`` or ``--config``, re-read on SIGHUP. Every
key, commented, is in ``daemon.example.toml`` beside this module (``whalebone daemon
--example`` prints it).

A job that stopped (its budget, a step limit, a failure, a cancel) can be queued again with
``whalebone jobs retry ID`` or ``POST /jobs/ID/retry``: it resumes its session where it
stopped, e.g. after ``whalebone budget set session:SID --usd 2``.

Finished jobs and their events stay in the job database until ``whalebone jobs prune --days
N`` (their sessions stay in the session store).

A schedule whose job is stopped by its budget stops ticking and says why (``whalebone jobs
schedules``, ``GET /schedules``) until it is resumed (``POST /schedules/NAME/resume``), e.g.
after ``whalebone budget set schedule:NAME --usd 30``.

Signals: SIGTERM/SIGINT drain (no new jobs; running ones stop at their next checkpoint, within
``grace``; they are queued again and resume on the next start), then exit 0. A second SIGTERM
cuts the grace short. SIGHUP reloads the configuration. SIGKILL loses nothing committed: on
start, jobs left ``running`` are queued again and resume their sessions; tool calls are
journaled, so a side-effecting call is never repeated.

Log (one JSON object per line): ``{"ts": "2026-11-23T17:40:01.123Z", "level": "info",
"event": "model_call", "job": "…", "session": "…", "step": 3, "kind": "turn", "model": "…",
"prompt_tokens": 41210, "cache_hit_tokens": 40960, "cache_miss_tokens": 250,
"completion_tokens": 180, "hit_rate": 0.9939, "price": 0.000412}``; other events: started,
job_submitted, job_started, job_finished (status, reason, message, totals), schedule_tick
(outcome submitted | idle | busy), schedule_stopped, budget_decision, draining, reloaded,
reload_failed, stopped.

An example systemd unit ships beside this file (``whalebone.service``)::

    [Service]
    Environment=WHALEBONE_HOME=%h/.whalebone
    ExecStart=%h/.local/bin/whalebone daemon
    ExecReload=/bin/kill -HUP $MAINPID
    KillSignal=SIGTERM
    TimeoutStopSec=60
    Restart=on-failure
"""

from whalebone.agent.daemon.config import (
    DaemonConfig,
    DaemonConfigError,
    ScheduleConfig,
    load_config,
)
from whalebone.agent.daemon.jobs import Job, JobError, JobQueue, ScheduleState

__all__ = [
    "DaemonConfig",
    "DaemonConfigError",
    "Job",
    "JobError",
    "JobQueue",
    "ScheduleConfig",
    "ScheduleState",
    "load_config",
]
