"""Fault harnesses (issue 17): what survives damage, full disks, kills and load. One command:

    .venv/bin/python bench/faults.py [--quick] [--only cache,disk,kill,budget,serve]

Each harness prints one line: how many trials were tried, how many survived, how many lost
something (a wrong answer, a failed request, a lost task, a cap passed, a 5xx), plus its own
figures. ``--quick`` (a few minutes on 2 cores) is what CI runs; the exit status is 1 when any
trial lost something, 0 otherwise (a harness that cannot run here says why and is skipped).

- ``cache``: every damage of ``tests/fault_kit.py`` (truncate, garbled logits, state and
  header, wrong shapes, a directory for a snapshot; an index reset, garbage, a garbled header
  or page, a directory for the index, a file for the folder) on a real bundled engine with
  random ``micro`` weights; survived = the same answer as with no cache and at most one warning.
- ``disk``: a 2 MB tmpfs, full and then read-only, under ``run``, ``sessions``, ``submit`` and
  ``budget``; survived = exit 0 or one line with exit 7 and the saved sessions intact.
- ``kill``: ``kill -9`` of a real ``whalebone run`` 0-90 ms after its session appears, then
  ``sessions resume``; lost = the task is not in the session or the resume does not finish it.
- ``budget``: processes sharing one ledger and cap, each call expected to hit the cache and
  70% reported with no hits; lost = a run whose total spend passed the cap.
- ``serve``: ``whalebone serve`` under concurrent streaming clients, 35% of which drop
  mid-stream; lost = a 5xx or a broken response; also 429s, the server's cancelled counter
  against the drops, and its RSS growth.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the fault corpus lives with the tests

from fault_kit import (  # noqa: E402
    FOLDER_FAULTS,
    MISSER,
    SNAPSHOT_FAULTS,
    fill,
    remount_read_only,
    small_disk,
)


@dataclass
class Tally:
    name: str
    tried: int = 0
    survived: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    skipped: str = ""

    def add(self, ok: bool, note: str = "") -> None:
        self.tried += 1
        if ok:
            self.survived += 1
        else:
            self.lost += 1
            if note and len(self.notes) < 5:
                self.notes.append(note)

    def line(self) -> str:
        if self.skipped:
            return f"{self.name:<7} skipped: {self.skipped}"
        return (f"{self.name:<7} tried {self.tried:>5}  survived {self.survived:>5}  "
                f"lost {self.lost:>3}" + "".join(f"\n          {n}" for n in self.notes))


def whalebone(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("WHALEBONE_ENGINE", None)
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=home)


def scripted(folder: Path, completions: list[str], query: str = "") -> str:
    path = folder / "script.json"
    path.write_text(json.dumps(completions), encoding="utf-8")
    return f"scripted:{path}{query}"


def answer_text(text: str) -> str:
    from whalebone.dsml import emit_completion

    return emit_completion(text, reasoning="Done thinking.")


# -- cache --------------------------------------------------------------------------------------

def bench_cache(quick: bool, work: Path) -> Tally:
    import anyio
    import torch

    from whalebone.engine.base import GenerationRequest
    from whalebone.engine.runtime.bundled import BundledEngine
    from whalebone.engine.runtime.prefix_cache import PrefixCache, PrefixCacheWarning

    torch.set_num_threads(1)
    tally = Tally("cache")
    eng = BundledEngine.random("micro", seed=0, use_cache=False)
    keep = [v for v in eng.vocab.model_to_v4 if v > 2]
    fp = BundledEngine.cache_fingerprint(eng.transformer, eng.vocab)

    def run(root: Path | None, ids: list[int]) -> tuple[str, int]:
        e = (BundledEngine.random("micro", seed=0, use_cache=False) if root is None
             else BundledEngine.random("micro", seed=0, cache_dir=root))
        fin = anyio.run(e.generate, GenerationRequest(prompt_ids=ids, max_tokens=5))
        if e.cache is not None:
            e.cache.close()
        return fin.text, fin.usage.prompt_cache_hit_tokens

    faults: list[tuple[str, Callable[[Path, list[int]], None]]] = []
    for name, f in sorted(SNAPSHOT_FAULTS.items()):
        def snap(root: Path, ids: list[int], f: Callable[[Path], None] = f) -> None:
            c = PrefixCache(root, fingerprint=fp)
            digest = c.digest(ids)
            c.close()
            f(root / "snapshots" / f"{digest}.safetensors")
        faults.append((name, snap))
    faults += [(name, lambda root, ids, f=f: f(root)) for name, f in sorted(FOLDER_FAULTS.items())]
    for trial in range(1 if quick else 3):
        ids = [0] + [keep[(i * (7 + trial)) % len(keep)] for i in range(299)]
        cold, _ = run(None, ids)
        for name, damage in faults:
            root = work / f"cache-{trial}-{name}"
            try:
                run(root, ids)
                damage(root, ids)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    text, _ = run(root, ids)
                said = [w for w in caught if issubclass(w.category, PrefixCacheWarning)]
                ok = text == cold and len(said) <= 1
                tally.add(ok, f"{name}: {'wrong answer' if text != cold else len(said)} "
                              f"{'warnings' if text == cold else ''}")
            except Exception as e:  # a request that failed because of the cache: lost
                tally.add(False, f"{name}: {type(e).__name__}: {e}")
    return tally


# -- disk ---------------------------------------------------------------------------------------

def bench_disk(quick: bool, work: Path) -> Tally:
    tally = Tally("disk")
    if sys.platform != "linux":
        tally.skipped = "tmpfs mounts are Linux's"
        return tally
    engine = scripted(work, [answer_text("Hello.")] * 8)
    for how in ("full", "read_only"):
        disk = work / f"disk-{how}"
        with small_disk(disk, "2m") as why:
            if why is not None:
                tally.skipped = why
                return tally
            home = disk / "home"
            home.mkdir()
            db = home / "sessions.db"
            first = whalebone(home, "run", "Say hello.", "--engine", engine, "--store", str(db),
                              "--no-tools")
            whalebone(home, "budget", "set", "global", "--usd", "5")
            whalebone(home, "submit", "an early job")
            if first.returncode != 0:
                tally.add(False, f"setup: {first.stderr[-200:]}")
                continue
            before = _messages(db)
            sid = _session(db)
            assert sid is not None
            fill(disk) if how == "full" else remount_read_only(disk)
            commands = [["run", "Another task.", "--engine", engine, "--store", str(db),
                         "--no-tools"],
                        ["sessions", "resume", sid, "More.", "--engine", engine, "--store",
                         str(db), "--no-tools"],
                        ["sessions", "list", "--store", str(db)],
                        ["sessions", "show", sid, "--store", str(db)],
                        ["submit", "a job"], ["jobs", "list"],
                        ["budget", "set", "session", "--usd", "1"]]
            for args in commands if not quick else commands[:1] + commands[2:]:
                out = whalebone(home, *args)
                lines = [x for x in out.stderr.splitlines()
                         if x.strip() and not x.startswith("whalebone: warning:")]
                ok = (out.returncode == 0 or (out.returncode == 7 and len(lines) == 1)) and \
                    "Traceback" not in out.stderr
                tally.add(ok, f"{how} {args[0]} {args[1]}: exit {out.returncode}: "
                              f"{out.stderr.strip()[-160:]}")
            tally.add(_messages(db) == before, f"{how}: saved messages changed")
    return tally


def _messages(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)  # reads on a full disk too
    try:
        if con.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            return ["<corrupt>"]
        return [m for (m,) in con.execute("SELECT message FROM messages ORDER BY session, seq")]
    finally:
        con.close()


# -- kill ---------------------------------------------------------------------------------------

def bench_kill(quick: bool, work: Path) -> Tally:
    tally = Tally("kill")
    engine = scripted(work, [answer_text("Finished the task.")])
    delays = [0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.045, 0.06, 0.075, 0.09]
    trials = 8 if quick else 30
    killed_early = 0
    for trial in range(trials):
        delay = delays[trial % len(delays)]
        home = work / f"kill-{trial}"
        home.mkdir()
        db = home / "sessions.db"
        task = f"Write report {trial}."
        env = {**os.environ, "WHALEBONE_HOME": str(home), "OMP_NUM_THREADS": "1"}
        env.pop("WHALEBONE_ENGINE", None)
        proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "run", task,
                                 "--engine", engine, "--store", str(db), "--no-tools"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sid = None
        deadline = time.monotonic() + 60
        while sid is None and proc.poll() is None and time.monotonic() < deadline:
            sid = _session(db)
            time.sleep(0.0005)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_early += 1
        proc.communicate(timeout=60)
        sid = sid or _session(db)
        if sid is None:
            tally.add(True)  # killed before the session existed: no task was accepted yet
            continue
        out = whalebone(home, "sessions", "resume", sid, "--engine", engine, "--store",
                        str(db), "--no-tools")
        msgs = [json.loads(m) for m in _messages(db)]
        users = [m.get("content", "") for m in msgs if m.get("role") == "user"]
        ok = (out.returncode == 0 and bool(users) and users[0].startswith(task)
              and msgs[-1].get("role") == "assistant")
        tally.add(ok, f"killed {delay * 1000:.0f} ms after the session: exit "
                      f"{out.returncode}, {len(users)} user messages")
    tally.notes.insert(0, f"{killed_early} of {trials} runs killed before they ended")
    return tally


def _session(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            row = con.execute("SELECT id FROM sessions").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else row[0]


# -- budget -------------------------------------------------------------------------------------

def bench_budget(quick: bool, work: Path) -> Tally:
    from whalebone.budget.ledger import Ledger, Limit, day_scope

    tally = Tally("budget")
    cap = 0.004
    worst = 0.0
    for run in range(2 if quick else 6):
        path = work / f"ledger-{run}.db"
        Ledger(path).set_default(Limit(scope="global", max_usd=cap))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-c", MISSER, str(path), str(run * 100 + i)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
                 for i in range(6 if quick else 20)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
        spent = Ledger(path).state(day_scope("global")).spent_usd
        worst = max(worst, spent)
        ok = spent <= cap + 1e-12 and all(p.returncode == 0 for p in procs)
        tally.add(ok, f"run {run}: ${spent:.6f} on a ${cap} cap {errs[0][-200:]}")
    tally.notes.insert(0, f"highest total ${worst:.6f} on a ${cap} cap")
    return tally


# -- serve --------------------------------------------------------------------------------------

def bench_serve(quick: bool, work: Path) -> Tally:
    import anyio
    import httpx

    tally = Tally("serve")
    requests, width = (200, 30) if quick else (1100, 40)
    engine = scripted(work, [answer_text("word " * 40)] * (requests + 20),
                      "?delay=0.002&delta_chars=4")
    env = {**os.environ, "WHALEBONE_HOME": str(work / "serve-home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "serve", "--engine",
                             engine, "--port", "0", "--concurrency", "4", "--queue", "16"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        tally.skipped = f"serve did not start: {proc.communicate(timeout=10)[1][-300:]}"
        return tally
    base = line.split()[2]
    rss = {"before": 0, "after": 0}
    counts = {"done": 0, "dropped": 0, "429": 0, "429_no_retry_after": 0, "5xx": 0, "broken": 0}
    rng = random.Random(17)
    plan = [rng.random() < 0.35 for _ in range(requests)]

    async def one(drop: bool, client: httpx.AsyncClient) -> None:
        for _ in range(50):  # a polite client: back off on 429 and try again
            if not await attempt(drop, client):
                return
            await anyio.sleep(0.05 + rng.random() * 0.2)  # Retry-After: 1, shortened
        counts["broken"] += 1  # never admitted

    async def attempt(drop: bool, client: httpx.AsyncClient) -> bool:
        """One request; True when it was refused with 429 (and should be retried)."""
        body = {"model": "x", "stream": True, "max_tokens": 64,
                "messages": [{"role": "user", "content": "Say words."}]}
        try:
            async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                if r.status_code == 429:
                    counts["429"] += 1
                    counts["429_no_retry_after"] += "retry-after" not in r.headers
                    return True
                if r.status_code >= 500:
                    counts["5xx"] += 1
                    return False
                seen = 0
                async for chunk in r.aiter_lines():
                    seen += chunk.startswith("data:")
                    if drop and seen >= 3:
                        counts["dropped"] += 1
                        return False  # leaving the block closes the connection mid-stream
                    if chunk.strip() == "data: [DONE]":
                        counts["done"] += 1
                        return False
                counts["broken"] += 1
        except httpx.HTTPError:
            counts["broken"] += 1
        return False

    async def load() -> None:
        for _ in range(100):  # the line is printed just before uvicorn accepts
            try:
                async with httpx.AsyncClient() as c:
                    await c.get(f"{base}/health")
                break
            except httpx.HTTPError:
                await anyio.sleep(0.05)
        limits = httpx.Limits(max_connections=width, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            for _ in range(10):  # warm up, so that RSS growth is the load's, not the imports'
                await one(False, client)
            counts["done"] -= 10
            rss["before"] = _rss(proc.pid)
            sem = anyio.Semaphore(width)

            async def guarded(drop: bool) -> None:
                async with sem:
                    await one(drop, client)

            async with anyio.create_task_group() as tg:
                for drop in plan:
                    tg.start_soon(guarded, drop)

    try:
        anyio.run(load)
        time.sleep(0.5)  # let the server notice the last disconnects
        health = httpx.get(f"{base}/health").json()
        rss["after"] = _rss(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    late = int(health.get("served", 0)) - counts["done"] - 10  # 10: the warm-up requests
    for _ in range(counts["done"] + counts["dropped"]):
        tally.add(True)
    for _ in range(counts["5xx"] + counts["broken"] + counts["429_no_retry_after"]):
        tally.add(False)
    if health.get("cancelled", 0) + late != counts["dropped"]:  # a drop the server missed
        tally.add(False, f"{counts['dropped']} drops, {health.get('cancelled')} cancelled")
    tally.notes.append(f"{counts['done']} done, {counts['dropped']} dropped mid-stream, "
                       f"{counts['429']} x 429 (retried), {counts['5xx']} x 5xx, "
                       f"{counts['broken']} broken; server counted "
                       f"{health.get('cancelled')} cancelled, served {health.get('served')} "
                       f"(so {late} drops came after the whole answer was sent); "
                       f"RSS {rss['before'] / 1e6:.0f} -> {rss['after'] / 1e6:.0f} MB at "
                       f"{width}-way concurrency")
    return tally


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


HARNESSES: dict[str, Callable[[bool, Path], Tally]] = {
    "cache": bench_cache, "disk": bench_disk, "kill": bench_kill, "budget": bench_budget,
    "serve": bench_serve,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: what CI runs")
    parser.add_argument("--only", default=",".join(HARNESSES),
                        help=f"comma-separated harnesses (default: {','.join(HARNESSES)})")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        parser.error(f"unknown harnesses {unknown} (known: {', '.join(HARNESSES)})")
    lost = 0
    with tempfile.TemporaryDirectory(prefix="whalebone-faults-") as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            started = time.monotonic()
            tally = HARNESSES[name](args.quick, work)
            print(f"{tally.line()}\n          ({time.monotonic() - started:.0f} s)", flush=True)
            lost += tally.lost
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
