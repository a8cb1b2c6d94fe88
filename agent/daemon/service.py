"""The daemon process: the control API, the scheduler and up to ``concurrency`` jobs at once.

Signals: SIGTERM (or SIGINT) stops taking work, lets each running job reach its next checkpoint
(at most ``grace`` seconds, then cancels it: the session store keeps every committed step
anyway), puts the interrupted jobs back in the queue and exits 0; the next start resumes them.
SIGHUP re-reads the configuration file (concurrency, engine, agent, budget, schedules, tools;
the address and port need a restart); a file that does not load is logged and the running
configuration kept. A second daemon on the same job database refuses to start (an ``flock``,
released by the kernel when the holder dies, so a killed daemon never blocks its successor).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import anyio

from whalebone.agent.daemon.config import (
    DaemonConfig,
    DaemonConfigError,
    control_token,
    load_config,
)
from whalebone.agent.daemon.engines import Engines
from whalebone.agent.daemon.jobs import JobQueue
from whalebone.agent.daemon.runner import JobRunner, Running
from whalebone.agent.daemon.scheduler import Scheduler
from whalebone.agent.store import SessionStore
from whalebone.core.errors import WhaleboneError, storage_failure
from whalebone.core.home import open_private, private_dir, write_private

STORAGE_EXIT = 7  # as `whalebone run`: the disk is full or read-only


class DaemonBusy(WhaleboneError):
    """Another daemon is already running on this job database."""


class JsonLog:
    """One JSON object per line: ``ts`` (UTC ISO 8601), ``level``, ``event``, then fields
    (``job``, ``session``, ``step``, tokens, ``price``…). Fields that are None are left out."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._out: TextIO = sys.stderr if target == "-" else open_private(
            Path(target).expanduser(), "a", encoding="utf-8")

    def __call__(self, event: str, *, level: str = "info", **fields: Any) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                  + f".{int(time.time() * 1000) % 1000:03d}Z", "level": level, "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            self._out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass  # a full disk or a closed stderr must not stop the jobs

    def reopen(self) -> None:
        """Open the file again (SIGHUP after logrotate moved it away)."""
        if self._out is not sys.stderr:
            new = open_private(Path(self.target).expanduser(), "a", encoding="utf-8")
            old, self._out = self._out, new
            old.close()

    def close(self) -> None:
        if self._out is not sys.stderr:
            self._out.close()


class Daemon:
    """``whalebone daemon``; :meth:`run` returns the process's exit code."""

    def __init__(self, config: DaemonConfig, *, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.log = JsonLog(config.log)
        self.queue = JobQueue(config.jobs_path)
        self.store = SessionStore(config.store_path)
        self.engines = Engines()
        self.runner = JobRunner(config, self.queue, self.store, self.engines, self.log)
        self.scheduler = Scheduler(self.queue, self._submit_scheduled, self.log)
        self.running: dict[str, Running] = {}
        self.draining = False
        self.started = time.time()
        self.token = control_token(config)
        self.url = ""
        self._wake: anyio.Event | None = None  # made inside the event loop
        self._lock_fd: int | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def _take_lock(self) -> None:
        path = self.config.jobs_path.with_name(self.config.jobs_path.name + ".daemon.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonBusy(f"another daemon is running on {self.config.jobs_path}") from None
        self._lock_fd = fd

    def _bind(self) -> socket.socket:
        host = self.config.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.config.port))
        sock.listen(128)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{port}"
        return sock

    def _write_address(self) -> None:
        """``HOME/daemon.json``: where the API listens, for scripts and ``whalebone jobs``."""
        path = self.config.home_path / "daemon.json"
        write_private(path, json.dumps({"url": self.url, "pid": os.getpid()}))

    def run(self) -> int:
        # Until the event loop listens for it, a SIGHUP (a reload) must not end the process.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            self._take_lock()
            sock = self._bind()
        except (DaemonBusy, OSError) as e:
            self.log("start_failed", level="error", message=str(e))
            return STORAGE_EXIT if storage_failure(e) else 1
        if not self.config.workspace:
            private_dir(self.config.workspace_path)
        requeued, given_up = self.queue.requeue_running(self.config.max_crashes)
        self._write_address()
        self.log("started", pid=os.getpid(), url=self.url, concurrency=self.config.concurrency,
                 engine=self.config.engine, schedules=[s.name for s in self.config.schedule],
                 resumed_jobs=requeued or None)
        for jid in given_up:
            self.log("job_given_up", level="error", job=jid,
                     message=self.queue.get(jid).message)
        code = 0
        try:
            anyio.run(self._main, sock)
        except Exception as e:  # said in the log, where an unattended daemon's owner looks
            problem = storage_failure(e)
            if problem is None:
                self.log("crashed", level="error", message=f"{type(e).__name__}: {e}")
                code = 1
            else:  # the jobs it was running stay "running" and are requeued at the next start
                self.log("crashed", level="error", message=f"storage: {problem}; jobs in "
                         "flight resume at the next start")
                code = STORAGE_EXIT
        finally:
            self.log("stopped", pid=os.getpid(), exit_code=code)
            self.store.close()
            self.queue.close()
            self.log.close()
        return code

    async def _main(self, sock: socket.socket) -> None:
        import uvicorn

        from whalebone.agent.daemon.api import create_app

        config = uvicorn.Config(create_app(self), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        server = _quiet_server(config)
        served = anyio.Event()
        self._wake = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                served.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._signals)
            tg.start_soon(serve)
            tg.start_soon(self._schedule_loop)
            tg.start_soon(self._watch_cancels)
            await self._work_loop(tg)
            # Draining: the work loop returned once every running job was handed back.
            server.should_exit = True
            with anyio.move_on_after(5):
                await served.wait()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.engines.aclose()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    self.reload()
                    continue
                if not self.draining:
                    self.log("draining", signal=signal.Signals(signum).name,
                             running=list(self.running) or None, grace=self.config.grace_s)
                    self.draining = True
                    for r in self.running.values():
                        r.stopping = True
                    self.wake()
                else:  # a second TERM: do not wait out the grace period
                    for r in self.running.values():
                        r.scope.cancel()

    def reload(self) -> bool:
        """Re-read the configuration file and reopen the log file (SIGHUP)."""
        try:
            self.log.reopen()
        except OSError as e:
            self.log("log_reopen_failed", level="error", message=str(e))
        try:
            new = load_config(self.config_path)
        except DaemonConfigError as e:
            self.log("reload_failed", level="error", message=str(e))
            return False
        moved = [k for k in ("host", "port", "jobs", "store", "home", "log")
                 if getattr(new, k) != getattr(self.config, k)]
        self.config = new
        self.runner.reconfigure(new)
        self.log("reloaded", concurrency=new.concurrency, engine=new.engine,
                 schedules=[s.name for s in new.schedule],
                 needs_restart=moved or None)
        self.wake()
        return True

    # --- work -------------------------------------------------------------------------------

    def _submit_scheduled(self, schedule: Any) -> None:
        job = self.queue.submit(schedule.task, engine=schedule.engine or "",
                                schedule=schedule.name)
        self.log("job_submitted", job=job.id, schedule=schedule.name)
        self.wake()

    def wake(self) -> None:
        """Look at the queue now (a job was submitted, a configuration reloaded)."""
        if self._wake is not None:
            self._wake.set()

    async def _work_loop(self, tg: Any) -> None:
        while not self.draining:
            while len(self.running) < self.config.concurrency and not self.draining:
                job = self.queue.claim()
                if job is None:
                    break
                running = Running(job)
                self.running[job.id] = running
                tg.start_soon(self._run_job, running)
            assert self._wake is not None
            with anyio.move_on_after(self.config.poll_s):
                await self._wake.wait()
            self._wake = anyio.Event()
        with anyio.move_on_after(self.config.grace_s):
            while self.running:
                await anyio.sleep(0.02)
        for r in list(self.running.values()):  # past the grace period: cut them off
            self.log("job_cut_off", level="warning", job=r.job.id, step=r.step)
            r.scope.cancel()
        with anyio.move_on_after(5):
            while self.running:
                await anyio.sleep(0.02)

    async def _run_job(self, running: Running) -> None:
        try:
            await self.runner.run(running)
        finally:
            self.running.pop(running.job.id, None)
            self.wake()

    async def _watch_cancels(self) -> None:
        while True:
            await anyio.sleep(self.config.poll_s)
            for jid in self.queue.cancel_requested(list(self.running)):
                r = self.running.get(jid)
                if r is not None and not r.scope.cancel_called:
                    self.log("job_cancelling", job=jid, step=r.step)
                    r.scope.cancel()

    async def _schedule_loop(self) -> None:
        while not self.draining:
            try:
                await self.scheduler.tick(self.config.schedule,
                                          self.config.workspace_path)
            except Exception as e:  # a broken schedule must not stop the others next time
                self.log("schedule_error", level="error", message=f"{type(e).__name__}: {e}")
            await anyio.sleep(min(self.config.poll_s, 1.0))

    def health(self) -> dict[str, Any]:
        counts = self.queue.counts()
        return {"status": "draining" if self.draining else "ok", "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                "concurrency": self.config.concurrency, "running": len(self.running),
                "queued": counts.get("queued", 0), "jobs": counts,
                "schedules": len(self.config.schedule)}


def _quiet_server(config: Any) -> Any:
    """uvicorn's server without its own signal handling (the daemon owns the signals)."""
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Quiet(config)
