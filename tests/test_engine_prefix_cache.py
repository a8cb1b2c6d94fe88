from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from whalebone.engine.runtime.prefix_cache import (
    PrefixCache,
    PrefixCacheError,
    PrefixCacheWarning,
    SnapshotIgnored,
)

IDS = list(range(100, 1100))


def state_for(n: int) -> dict[str, torch.Tensor]:
    """A stand-in sequence state whose contents depend on the prefix length."""
    g = torch.Generator().manual_seed(n)
    return {"pos": torch.tensor([n], dtype=torch.int64),
            "layers.0.window": torch.randn(8, 16, generator=g),
            "layers.1.compressor.entries": torch.randn(n // 4, 16, generator=g)}


def logits_for(n: int) -> torch.Tensor:
    return torch.randn(64, generator=torch.Generator().manual_seed(10_000 + n))


def put(cache: PrefixCache, n: int, ids: list[int] = IDS) -> bool:
    return cache.store(ids[:n], state_for(n), logits_for(n))


def test_the_longest_cached_prefix_is_restored_bit_exactly(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    for n in (256, 512, 700):
        assert put(cache, n)
    hit = cache.lookup([*IDS[:600], 7, 8, 9])
    assert hit is not None and hit.length == 512
    for name, t in state_for(512).items():
        assert torch.equal(hit.state[name], t) and hit.state[name].dtype == t.dtype
    assert torch.equal(hit.logits, logits_for(512))
    assert cache.lookup(IDS).length == 700  # type: ignore[union-attr]
    assert cache.lookup(IDS, max_length=699).length == 512  # type: ignore[union-attr]
    assert cache.lookup(IDS[:700]).length == 700  # type: ignore[union-attr] # whole prompt


def test_a_prompt_sharing_no_cached_prefix_misses(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    put(cache, 256)
    assert cache.lookup([1, *IDS[1:]]) is None
    assert cache.lookup(IDS[:255]) is None
    assert cache.lookup([]) is None


def test_storing_an_existing_prefix_writes_nothing_new(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    assert put(cache, 256)
    assert not put(cache, 256)
    assert cache.stats().snapshots == 1
    assert not list(cache.files.glob(".tmp-*"))


def test_models_sharing_a_folder_never_see_each_others_snapshots(tmp_path: Path) -> None:
    a = PrefixCache(tmp_path, fingerprint="weights-a")
    b = PrefixCache(tmp_path, fingerprint="weights-b")
    put(a, 300)
    assert b.lookup(IDS) is None
    put(b, 300)
    assert a.stats().snapshots == 2
    assert a.lookup(IDS) is not None and b.lookup(IDS) is not None


def test_a_corrupt_snapshot_is_ignored_with_a_warning_and_a_shorter_one_used(
        tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    put(cache, 256)
    put(cache, 512)
    path = cache.files / f"{cache.digest(IDS[:512])}.safetensors"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # a torn write
    with pytest.warns(SnapshotIgnored, match="checksum mismatch"):
        hit = cache.lookup(IDS)
    assert hit is not None and hit.length == 256
    assert cache.lengths() == [256] and not path.exists()


def test_garbage_in_the_header_is_ignored_with_a_warning(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    put(cache, 256)
    path = cache.files / f"{cache.digest(IDS[:256])}.safetensors"
    path.write_bytes(b"\xff" * 64)
    with pytest.warns(SnapshotIgnored):
        assert cache.lookup(IDS) is None


def test_a_foreign_snapshot_file_is_never_loaded(tmp_path: Path) -> None:
    """Another model's file under our digest (copied caches, a bad sync): the fingerprint in
    the file's own metadata gives it away."""
    ours = PrefixCache(tmp_path / "ours", fingerprint="m1")
    theirs = PrefixCache(tmp_path / "theirs", fingerprint="m2")
    put(ours, 256)
    put(theirs, 256)
    shutil.copy(theirs.files / f"{theirs.digest(IDS[:256])}.safetensors",
                ours.files / f"{ours.digest(IDS[:256])}.safetensors")
    with pytest.warns(SnapshotIgnored, match="checksum mismatch"):
        assert ours.lookup(IDS) is None
    assert ours.stats().snapshots == 0


def test_a_digest_match_is_verified_against_the_stored_ids(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    other = [5] * 256
    put(cache, 256)
    put(cache, 256, other)
    # Swap the files: the index says IDS[:256], the file holds other ids.
    shutil.copy(cache.files / f"{cache.digest(other)}.safetensors",
                cache.files / f"{cache.digest(IDS[:256])}.safetensors")
    with pytest.warns(SnapshotIgnored, match="checksum mismatch"):
        assert cache.lookup(IDS) is None


def test_a_vanished_file_is_a_warned_miss(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    put(cache, 256)
    (cache.files / f"{cache.digest(IDS[:256])}.safetensors").unlink()
    with pytest.warns(SnapshotIgnored, match="missing"):
        assert cache.lookup(IDS) is None


def test_lru_eviction_keeps_the_budget_and_the_recently_used(tmp_path: Path) -> None:
    probe = PrefixCache(tmp_path / "probe", fingerprint="m1")
    put(probe, 256)
    one = probe.stats().nbytes
    cache = PrefixCache(tmp_path / "c", fingerprint="m1", budget_bytes=int(one * 3.5))
    seqs = [[k] * 256 for k in range(6)]
    for k in range(3):
        put(cache, 256, seqs[k])
        time.sleep(0.01)
    assert cache.lookup(seqs[0]) is not None  # 0 is now the most recently used
    time.sleep(0.01)
    for k in range(3, 5):
        put(cache, 256, seqs[k])
        time.sleep(0.01)
    stats = cache.stats()
    assert stats.nbytes <= stats.budget and stats.snapshots == 3
    assert cache.contains(seqs[0]) and cache.contains(seqs[4]) and cache.contains(seqs[3])
    assert not cache.contains(seqs[1]) and not cache.contains(seqs[2])
    assert len(list(cache.files.glob("*.safetensors"))) == 3  # evicted files are gone
    assert cache.evict(0) == 3 and cache.stats().nbytes == 0


def test_a_snapshot_bigger_than_the_budget_is_not_stored(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1", budget_bytes=100)
    assert not put(cache, 512)
    assert cache.stats().snapshots == 0 and not list(cache.files.iterdir())


def test_reserved_tensor_names_and_bad_budgets_are_errors(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    with pytest.raises(PrefixCacheError, match="reserved"):
        cache.store([1, 2], {"__ids__": torch.zeros(1)}, torch.zeros(3))
    with pytest.raises(PrefixCacheError, match="negative"):
        PrefixCache(tmp_path, fingerprint="m1", budget_bytes=-1)


def test_stale_temp_files_of_crashed_writers_are_swept(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    stale = cache.files / ".tmp-dead.safetensors"
    fresh = cache.files / ".tmp-live.safetensors"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cache.close()
    PrefixCache(tmp_path, fingerprint="m1")
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone


WRITER = textwrap.dedent("""
    import sys, torch
    from whalebone.engine.runtime.prefix_cache import PrefixCache
    root, k = sys.argv[1], int(sys.argv[2])
    cache = PrefixCache(root, fingerprint="m1", budget_bytes=int(sys.argv[3]))
    for i in range(12):
        ids = [k, i] * 128
        cache.store(ids, {"w": torch.full((64, 64), float(k * 100 + i))}, torch.zeros(8))
        hit = cache.lookup(ids)
        assert hit is None or torch.equal(hit.state["w"], torch.full((64, 64), float(k*100+i)))
""")


def test_processes_share_one_cache_and_its_budget(tmp_path: Path) -> None:
    probe = PrefixCache(tmp_path / "probe", fingerprint="m1")
    probe.store([0, 0] * 128, {"w": torch.zeros(64, 64)}, torch.zeros(8))
    budget = 6 * probe.stats().nbytes
    root = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(k), str(budget)],
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    cache = PrefixCache(root, fingerprint="m1", budget_bytes=budget)
    stats = cache.stats()
    assert stats.snapshots == 6 and stats.nbytes <= budget
    assert len(list(cache.files.glob("*.safetensors"))) == 6  # no orphan, no missing file
    # Whatever survived was written by the other processes and reads back intact here.
    found = 0
    for k in range(2):
        for i in range(12):
            hit = cache.lookup([k, i] * 128)
            if hit is not None:
                found += 1
                assert torch.equal(hit.state["w"], torch.full((64, 64), float(k * 100 + i)))
    assert found == 6
    assert cache.lookup([1, 11] * 128) is not None or cache.lookup([0, 11] * 128) is not None


def test_a_snapshot_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path, fingerprint="m1")
    shutil.rmtree(cache.files)
    cache.files.write_text("not a folder any more")  # e.g. a disk gone read-only or full
    with pytest.warns(PrefixCacheWarning, match="not written"):
        assert not put(cache, 256)
    assert cache.stats().snapshots == 0
    assert cache.lookup(IDS) is None
