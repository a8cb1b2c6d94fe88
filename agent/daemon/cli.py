"""``whalebone daemon``, ``whalebone submit`` and ``whalebone jobs``.

    whalebone daemon [--config FILE]
    whalebone submit "TASK" [--engine SPEC] [--max-steps N] [--thinking MODE] [--wait] [--json]
    whalebone jobs list [--status S] [--json]
    whalebone jobs show ID [--events] [--json]
    whalebone jobs cancel ID
    whalebone jobs retry ID
    whalebone jobs prune --days N
    whalebone jobs schedules [--json]

``submit`` and ``jobs`` work on the job database directly (the daemon need not be running: a
job submitted while it is down runs when it starts). ``submit --wait`` exits like ``whalebone
run``: 0 answered, 1 failed, 3 stopped by a limit, 4 stopped by the budget, 130 cancelled. Every
command (``daemon`` too) exits 7 with one line when the disk is full or read-only; the daemon's
jobs in flight are then resumed at its next start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from whalebone.core.errors import WhaleboneError
from whalebone.engine.factory import SPEC_HELP

EXAMPLE_CONFIG = Path(__file__).with_name("daemon.example.toml")

EXIT_OF_STATUS = {"done": 0, "failed": 1, "stopped": 3, "budget": 4, "cancelled": 130}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("daemon", help="run agents headless: a job queue, schedules, an API",
                       description="Run the whalebone daemon: jobs from a SQLite queue with a "
                       "concurrency limit, schedules and heartbeats, a loopback control API. "
                       "SIGTERM drains to a checkpoint and exits; SIGHUP reloads the config.",
                       epilog="The config file is TOML: the engine(s) jobs may use, workspace, "
                       "tools, concurrency, port, [agent], [shell], [budget] and [[schedule]] "
                       "tables. 'whalebone daemon --example' prints a commented example with "
                       "every key.")
    _config_option(d)
    d.add_argument("--example", action="store_true",
                   help="print a commented daemon.toml with every key, and exit")
    d.set_defaults(handler=cmd_daemon)

    s = sub.add_parser("submit", help="queue a task for the daemon")
    s.add_argument("task", help="what the agent should do")
    _config_option(s)
    s.add_argument("--engine", metavar="SPEC", default="", help=f"engine for this job, one "
                   f"of the daemon's engines (default: the daemon's first): {SPEC_HELP}")
    s.add_argument("--max-steps", type=int, metavar="N")
    s.add_argument("--thinking", choices=["chat", "thinking", "max"])
    s.add_argument("--wait", action="store_true", help="wait for the job to end; print its "
                   "answer and exit with its status")
    s.add_argument("--json", action="store_true", help="print the job as JSON")
    s.set_defaults(handler=cmd_submit)

    j = sub.add_parser("jobs", help="list, show or cancel daemon jobs")
    j.set_defaults(handler=cmd_list, status=None, limit=50, json=False, config=None)
    jsub = j.add_subparsers(dest="jobs_command", metavar="ACTION")
    ls = jsub.add_parser("list", help="jobs, most recent first")
    _config_option(ls)
    ls.add_argument("--status", help="only jobs in this status")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    show = jsub.add_parser("show", help="a job, and optionally its events")
    show.add_argument("job")
    _config_option(show)
    show.add_argument("--events", action="store_true", help="print its events too")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    cancel = jsub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job")
    _config_option(cancel)
    cancel.set_defaults(handler=cmd_cancel)
    retry = jsub.add_parser("retry", help="queue a stopped, budget-stopped, failed or "
                            "cancelled job again (it resumes its session)")
    retry.add_argument("job")
    _config_option(retry)
    retry.set_defaults(handler=cmd_retry)
    prune = jsub.add_parser("prune", help="delete finished jobs older than --days (their "
                            "sessions are kept)")
    _config_option(prune)
    prune.add_argument("--days", type=float, required=True)
    prune.set_defaults(handler=cmd_prune)
    sch = jsub.add_parser("schedules", help="schedules and heartbeats with their state")
    _config_option(sch)
    sch.add_argument("--json", action="store_true")
    sch.set_defaults(handler=cmd_schedules)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="daemon config TOML (default: "
                   "$WHALEBONE_HOME/daemon.toml)")


def _fail(message: str, code: int = 2) -> int:
    print(f"whalebone: {message}", file=sys.stderr)
    return code


def _config(args: argparse.Namespace) -> Any:
    from whalebone.agent.daemon.config import load_config

    return load_config(args.config)


def _queue(args: argparse.Namespace) -> Any:
    from whalebone.agent.daemon.jobs import JobQueue

    return JobQueue(_config(args).jobs_path)


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.example:
        sys.stdout.write(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        return 0
    from whalebone.agent.daemon.service import Daemon

    try:
        config = _config(args)
        daemon = Daemon(config, config_path=args.config)
    except WhaleboneError as e:
        return _fail(str(e))
    return daemon.run()


def _line(job: Any) -> str:
    from whalebone.agent.commands import safe

    when = dt.datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M:%S")
    origin = f" [{job.schedule}]" if job.schedule else ""
    return (f"{job.id}  {when}  {job.status:<9} {_steps(job.steps):>9}  ${job.price:.6f}"
            f"{origin}  {safe(job.task.splitlines()[0][:60])}")


def cmd_submit(args: argparse.Namespace) -> int:
    options = {k: v for k, v in (("max_steps", args.max_steps), ("thinking", args.thinking))
               if v is not None}
    try:
        config = _config(args)
        if not config.allows_engine(args.engine):
            return _fail(f"engine {args.engine!r} is not among the daemon's engines (engine, "
                         "engines = [...] in its config)")
        from whalebone.agent.daemon.jobs import JobQueue

        queue = JobQueue(config.jobs_path)
        job = queue.submit(args.task, engine=args.engine, options=options)
    except WhaleboneError as e:
        return _fail(str(e))
    if not args.wait:
        print(job.model_dump_json() if args.json else job.id)
        return 0
    while not job.terminal:
        time.sleep(0.2)
        job = queue.get(job.id)
    return _print_end(job, args.json)


def _print_end(job: Any, as_json: bool) -> int:
    from whalebone.agent.commands import safe

    if as_json:
        print(job.model_dump_json())
    else:
        if job.answer:
            print(safe(job.answer))
        if job.status != "done":
            print(f"{job.status} ({job.reason}): {safe(job.message)}", file=sys.stderr)
        print(f"— job {job.id} · session {job.session_id or '-'} · {_steps(job.steps)} · "
              f"{job.prompt_tokens:,} prompt tokens, {job.cache_hit_tokens:,} cached · "
              f"${job.price:.6f}")
    return EXIT_OF_STATUS.get(job.status, 1)


def cmd_list(args: argparse.Namespace) -> int:
    try:
        jobs = _queue(args).list(status=args.status, limit=args.limit)
    except WhaleboneError as e:
        return _fail(str(e))
    for job in jobs:
        print(job.model_dump_json() if args.json else _line(job))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from whalebone.agent.commands import safe

    try:
        queue = _queue(args)
        job = queue.get(queue.resolve(args.job))
    except WhaleboneError as e:
        return _fail(str(e))
    if args.json:
        data = job.model_dump(mode="json")
        if args.events:
            data["events"] = [e for _, e in queue.events(job.id, limit=100_000)]
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(_line(job))
    print(f"  session {job.session_id or '-'} · attempts {job.attempts} · "
          f"{job.prompt_tokens:,} prompt tokens, {job.cache_hit_tokens:,} cached, "
          f"{job.completion_tokens:,} completion")
    if job.message:
        print(f"  {job.reason}: {safe(job.message)}")
    if job.answer:
        print(f"  answer: {safe(job.answer[:2000])}")
    if args.events:
        for seq, event in queue.events(job.id, limit=100_000):
            print(f"  {seq:>4} {safe(json.dumps(event, ensure_ascii=False)[:300])}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        queue = _queue(args)
        job = queue.cancel(queue.resolve(args.job))
    except WhaleboneError as e:
        return _fail(str(e))
    if job.status == "running":
        print(f"{job.id}: cancelling (the daemon stops it within a moment)")
    else:
        print(f"{job.id}: {job.status}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    try:
        queue = _queue(args)
        job = queue.retry(queue.resolve(args.job))
    except WhaleboneError as e:
        return _fail(str(e))
    print(f"{job.id}: queued again (session {job.session_id or '-'})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.days >= 0:
        return _fail("--days must be a non-negative number")
    try:
        gone = _queue(args).prune(args.days * 86400)
    except WhaleboneError as e:
        return _fail(str(e))
    print(f"{gone} finished jobs deleted")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from whalebone.agent.commands import safe

    try:
        config = _config(args)
        from whalebone.agent.daemon.jobs import JobQueue

        queue = JobQueue(config.jobs_path)
    except WhaleboneError as e:
        return _fail(str(e))
    for s in config.schedule:
        st = queue.schedule_state(s.name)
        if args.json:
            print(json.dumps({"name": s.name, **st.model_dump(mode="json")}))
            continue
        when = f"every {s.every:g}s" if s.every is not None else f"cron {s.cron}"
        kind = "heartbeat" if s.heartbeat else "schedule"
        print(f"{s.name}  {kind} {when}  {st.status}  {st.ticks} ticks ({st.idle_ticks} idle)"
              f"  {st.runs} runs" + (f"  — {safe(st.reason)}" if st.reason else ""))
    return 0
