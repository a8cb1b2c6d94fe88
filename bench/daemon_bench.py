"""Daemon benchmark: what the daemon adds to a job, what an idle heartbeat costs, and how fast
the SQLite queue moves.

    .venv/bin/python bench/daemon_bench.py [--jobs 40] [--ticks 500] [--files 1000] [--idle 10]

1. Overhead per job: the same one-turn task run ``--jobs`` times with ``Agent.run`` directly
   and through the daemon's path (submit to the queue, claim, ``JobRunner.run``: session
   bookkeeping, events and usage in the job database, JSON log lines), side by side on one
   replay engine (real tokenizer), alternating so that machine load hits both alike.
2. An idle heartbeat: ``--ticks`` ticks of a heartbeat watching ``--files`` files that never
   change, beside a plain schedule on the same period whose jobs are finished between ticks.
   Reports CPU per tick and the jobs (each at least one model call) each submitted.
3. The queue: submissions and claims per second (each its own committed transaction).
4. An idle daemon (a real subprocess, default config, no jobs): CPU per second and memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.daemon.config import DaemonConfig, ScheduleConfig
from whalebone.agent.daemon.engines import Engines
from whalebone.agent.daemon.jobs import JobQueue
from whalebone.agent.daemon.runner import JobRunner, Running
from whalebone.agent.daemon.scheduler import Scheduler
from whalebone.agent.store import SessionStore
from whalebone.dsml import emit_completion


def job_overhead(root: Path, jobs: int) -> None:
    script = root / "answer.json"
    script.write_text(json.dumps([emit_completion("Done: the report is written.",
                                                  reasoning="Short task.")]))
    spec = f"replay:{script}"
    config = DaemonConfig.model_validate({"home": str(root), "workspace": str(root),
                                          "tools": "none", "engine": spec,
                                          "agent": {"date_in_task": False},
                                          "log": str(root / "daemon.log")})
    queue = JobQueue(config.jobs_path)
    store = SessionStore(config.store_path)
    engines = Engines()
    engine = engines.get(spec, {})
    log_file = (root / "daemon.log").open("a")

    def log(event: str, **fields: Any) -> None:
        log_file.write(json.dumps({"event": event, **fields}, default=str) + "\n")

    runner = JobRunner(config, queue, store, engines, log)
    agent = Agent(engine, store=store, config=AgentConfig(date_in_task=False))
    task = "Write the weekly report."

    async def direct() -> float:
        t = time.perf_counter()
        done = await agent.run(task)
        assert done.reason == "answer"
        return time.perf_counter() - t

    async def daemon() -> float:
        t = time.perf_counter()
        job = queue.submit(task)
        claimed = queue.claim()
        assert claimed is not None and claimed.id == job.id
        await runner.run(Running(claimed))
        assert queue.get(job.id).status == "done"
        return time.perf_counter() - t

    async def go() -> tuple[list[float], list[float]]:
        await direct()  # warm the tokenizer and the engine's cache accounting
        a, b = [], []
        for _ in range(jobs):
            a.append(await direct())
            b.append(await daemon())
        return a, b

    a, b = anyio.run(go)
    da, db = statistics.median(a) * 1e3, statistics.median(b) * 1e3
    print(f"1. one-turn job, median of {jobs}: Agent.run {da:.1f} ms · through the daemon "
          f"{db:.1f} ms · ratio {db / da:.2f} · daemon overhead {db - da:+.1f} ms/job")


def idle_heartbeat(root: Path, ticks: int, files: int) -> None:
    ws = root / "ws"
    (ws / "inbox").mkdir(parents=True)
    for i in range(files):
        (ws / "inbox" / f"mail-{i:05d}.txt").write_text(f"message {i}")
    queue = JobQueue(root / "jobs.db")
    submitted: list[str] = []

    def submit(s: ScheduleConfig) -> None:
        submitted.append(s.name)
        queue.submit(s.task, schedule=s.name)

    sched = Scheduler(queue, submit, lambda *a, **k: None)
    heartbeat = ScheduleConfig(name="heartbeat", every=1, watch=["inbox/*"], task="Read mail.")
    plain = ScheduleConfig(name="plain", every=1, task="Read mail.")

    async def go() -> tuple[float, float]:
        cpu = {"heartbeat": 0.0, "plain": 0.0}
        for t in range(ticks):
            for s in (heartbeat, plain):
                c = time.process_time()
                await sched.tick([s], ws, now=float(t))
                cpu[s.name] += time.process_time() - c
            for job in queue.list(status="queued"):  # the plain schedule's job "ran"
                queue.claim()
                queue.finish(job.id, "done")
        return cpu["heartbeat"], cpu["plain"]

    hb_cpu, plain_cpu = anyio.run(go)
    hb_jobs, plain_jobs = submitted.count("heartbeat"), submitted.count("plain")
    state = queue.schedule_state("heartbeat")
    print(f"2. {ticks} ticks, heartbeat over {files} unchanged files: {hb_jobs} jobs "
          f"({state.idle_ticks} idle ticks), {hb_cpu / ticks * 1e3:.2f} ms CPU/tick · plain "
          f"schedule: {plain_jobs} jobs, {plain_cpu / ticks * 1e3:.2f} ms CPU/tick · model "
          f"calls avoided: {plain_jobs - hb_jobs} of {plain_jobs}")


def queue_rates(root: Path, n: int = 2000) -> None:
    queue = JobQueue(root / "rates.db")
    t = time.perf_counter()
    for i in range(n):
        queue.submit(f"task {i}")
    submit = n / (time.perf_counter() - t)
    t = time.perf_counter()
    while queue.claim() is not None:
        pass
    claim = n / (time.perf_counter() - t)
    print(f"3. queue of {n}: {submit:,.0f} submissions/s · {claim:,.0f} claims/s")


def idle_daemon(root: Path, seconds: float) -> None:
    """A real ``whalebone daemon`` with nothing to do: CPU it burns while idle."""
    import json as _json
    import subprocess

    home = root / "idle"
    home.mkdir()
    (home / "daemon.toml").write_text("port = 0\n")
    env = {**os.environ, "WHALEBONE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "daemon"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (home / "daemon.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _json.loads((home / "daemon.json").read_text())["pid"] == proc.pid
        time.sleep(1.0)  # past start-up

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(seconds)
        used = cpu() - before
        rss = next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text()
                   .splitlines() if line.startswith("VmRSS"))
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"4. idle daemon over {seconds:g} s: {used * 1e3:.0f} ms CPU "
          f"({used / seconds:.2%} of a core), {int(rss) / 1024:.0f} MiB resident")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--ticks", type=int, default=500)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--idle", type=float, default=10.0, help="seconds to watch an idle daemon")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a").mkdir()
        (root / "b").mkdir()
        job_overhead(root / "a", args.jobs)
        idle_heartbeat(root / "b", args.ticks, args.files)
        queue_rates(root)
        idle_daemon(root, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
