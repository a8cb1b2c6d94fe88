"""The prefix cache is only ever an optimisation: every kind of damage to its folder gives one
warning and the same answer as a run with no cache at all, and the cache heals itself."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from functools import lru_cache
from pathlib import Path

import pytest
from conftest import stream_sync
from fault_kit import FOLDER_FAULTS, SNAPSHOT_FAULTS, fill, remount_read_only, small_disk

from whalebone.engine.base import GenerationRequest
from whalebone.engine.runtime.bundled import BundledEngine
from whalebone.engine.runtime.prefix_cache import PrefixCache, PrefixCacheWarning, SnapshotIgnored
from whalebone.engine.runtime.vocab import VocabMap
from whalebone.engine.v4.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKENS = 5


@lru_cache(maxsize=1)
def ids() -> list[int]:
    keep = [v for v in VocabMap.for_size(ModelConfig.preset("micro").vocab_size).model_to_v4
            if v > 2]
    return [0] + [keep[(i * 7) % len(keep)] for i in range(299)]


@lru_cache(maxsize=1)
def cold() -> tuple[str, list[int]]:
    """The answer with no cache at all."""
    eng = BundledEngine.random("micro", seed=0, use_cache=False)
    _, fin = stream_sync(eng, GenerationRequest(prompt_ids=ids(), max_tokens=TOKENS))
    return fin.text, eng.last_stats.completion_ids


def answer(root: Path) -> tuple[str, list[int], int, list[warnings.WarningMessage]]:
    """A fresh engine on ``root`` (as a new process would open it): text, ids, cache hits and
    the cache's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eng = BundledEngine.random("micro", seed=0, cache_dir=root)
        _, fin = stream_sync(eng, GenerationRequest(prompt_ids=ids(), max_tokens=TOKENS))
        if eng.cache is not None:
            eng.cache.close()
    mine = [w for w in caught if issubclass(w.category, PrefixCacheWarning)]
    return fin.text, eng.last_stats.completion_ids, fin.usage.prompt_cache_hit_tokens, mine


def warm(root: Path) -> None:
    text, _, hit, caught = answer(root)
    assert hit == 0 and not caught and text == cold()[0]


@pytest.mark.parametrize("fault", sorted(SNAPSHOT_FAULTS))
def test_a_damaged_snapshot_is_one_warning_and_the_cold_answer(tmp_path: Path,
                                                               fault: str) -> None:
    root = tmp_path / "cache"
    warm(root)
    target = root / "snapshots" / f"{_digest(root, len(ids()))}.safetensors"
    SNAPSHOT_FAULTS[fault](target)
    text, completion, hit, caught = answer(root)
    assert (text, completion) == cold()
    assert len(caught) == 1 and issubclass(caught[0].category, SnapshotIgnored), caught
    assert hit in (0, 256)  # the damaged prompt-end snapshot dropped, the 256 one may serve
    # Healed: the prompt-end snapshot was written again and serves the next run silently.
    text, completion, hit, caught = answer(root)
    assert (text, completion) == cold() and hit == len(ids()) and not caught


@pytest.mark.parametrize("fault", sorted(FOLDER_FAULTS))
def test_a_damaged_folder_is_one_warning_and_the_cold_answer(tmp_path: Path,
                                                             fault: str) -> None:
    root = tmp_path / "cache"
    warm(root)
    FOLDER_FAULTS[fault](root)
    text, completion, hit, caught = answer(root)
    assert (text, completion) == cold() and hit == 0
    # A missing index is just an empty cache; anything else is said once.
    assert len(caught) == (fault != "index_reset"), [str(w.message) for w in caught]
    if fault == "cache_is_file":
        assert root.read_text() == "not a cache\n"  # never deleted: it is not ours
        return
    # Rebuilt: the next run hits again, silently, and no orphan file outlived the reset.
    text, completion, hit, caught = answer(root)
    assert (text, completion) == cold() and hit == len(ids()) and not caught
    files = {p.name for p in (root / "snapshots").iterdir()}
    con = sqlite3.connect(root / "index.sqlite")
    known = {f"{d}.safetensors" for (d,) in con.execute("SELECT digest FROM snapshots")}
    con.close()
    assert files == known


def test_orphans_left_by_an_index_reset_are_swept_within_the_budget(tmp_path: Path) -> None:
    from fault_kit import index_reset

    root = tmp_path / "cache"
    warm(root)
    one = sum(p.stat().st_size for p in (root / "snapshots").iterdir())
    index_reset(root)
    budget = int(one * 1.5)
    eng = BundledEngine.random("micro", seed=0, cache_dir=root, cache_bytes=budget)
    for salt in range(3):
        prompt = [0] + [ids()[(i * (salt + 3)) % 299 + 1] for i in range(299)]
        stream_sync(eng, GenerationRequest(prompt_ids=prompt, max_tokens=2))
    size = sum(p.stat().st_size for p in (root / "snapshots").iterdir())
    assert size <= budget


def test_a_snapshot_path_that_is_a_directory_does_not_fail_the_lookup(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    import torch

    cache.store([1, 2, 3], {"w": torch.zeros(2)}, torch.zeros(4))
    path = cache.files / f"{cache.digest([1, 2, 3])}.safetensors"
    path.unlink()
    path.mkdir()
    with pytest.warns(SnapshotIgnored):
        assert cache.lookup([1, 2, 3, 4]) is None
    assert not path.exists() and cache.stats().snapshots == 0


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are Linux's")
@pytest.mark.parametrize("how", ["full", "read_only"])
def test_a_full_or_read_only_disk_turns_the_cache_off_with_one_warning(
        tmp_path: Path, how: str) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, "2m") as why:
        if why is not None:
            pytest.skip(f"no small disk for this test: {why}")
        root = disk / "cache"
        if how == "full":
            PrefixCache(root, fingerprint="x").close()  # an index, then no room for snapshots
            fill(disk)
        else:
            warm(root)
            remount_read_only(disk)
        text, completion, _, caught = answer(root)
        assert (text, completion) == cold()
        assert len(caught) == 1 and "cache off" in str(caught[0].message), \
            [str(w.message) for w in caught]


def _digest(root: Path, n: int) -> str:
    eng = BundledEngine.random("micro", seed=0, use_cache=False)
    fp = BundledEngine.cache_fingerprint(eng.transformer, eng.vocab)
    cache = PrefixCache(root, fingerprint=fp)
    try:
        return cache.digest(ids()[:n])
    finally:
        cache.close()


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WHALEBONE_HOME": str(home), "HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=home)


@pytest.mark.parametrize("fault", ["index_garbage", "index_directory", "cache_is_file"])
def test_whalebone_run_answers_with_a_damaged_cache(tmp_path: Path, fault: str) -> None:
    root = tmp_path / "cache"  # $WHALEBONE_HOME/cache, the engine's default
    warm(root)
    FOLDER_FAULTS[fault](root)
    out = cli(tmp_path, "run", "--engine", "random:micro", "--no-tools", "--max-tokens", "4",
              "--max-steps", "1", "say hi")
    assert out.returncode != 5 and "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if "prefix cache" in line]
    assert len(said) == 1 and said[0].startswith("whalebone: warning: "), out.stderr
    assert "session" in out.stdout  # the run ended with its usage line


def test_serve_starts_and_answers_when_the_cache_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a cache\n")
    env = {**os.environ, "WHALEBONE_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "whalebone.agent.cli", "serve", "--engine",
                             "random:micro", "--port", "0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), proc.stderr.read() if proc.stderr else ""
        url = line.split()[2]
        body = json.dumps({"model": "x", "max_tokens": 3,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = None
        for _ in range(300):  # the line is printed just before uvicorn accepts
            try:
                with urllib.request.urlopen(request, timeout=120) as resp:
                    answer = json.loads(resp.read())
                break
            except urllib.error.URLError as e:
                if not isinstance(e.reason, ConnectionRefusedError):
                    raise
                time.sleep(0.1)
        assert answer is not None
        assert answer["usage"]["prompt_tokens"] > 0
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err.count("prefix cache off") == 1 and "Traceback" not in err, err
