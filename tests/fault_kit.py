"""The fault corpus: ways a prefix cache folder gets damaged, and small disks that fill up or
turn read-only. Shared by the tests and ``bench/faults.py`` (which puts this folder on its
path); grow it when a new fault is seen in the wild."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _header(path: Path) -> tuple[int, dict[str, dict[str, object]]]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8:8 + n])


def _overwrite(path: Path, offset: int, payload: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(payload)


def _tensor_span(path: Path, pick: Callable[[str], bool]) -> tuple[int, int]:
    """File offsets [start, end) of the first tensor whose name ``pick`` accepts."""
    n, header = _header(path)
    for name, info in header.items():
        if name != "__metadata__" and pick(name):
            lo, hi = info["data_offsets"]  # type: ignore[misc]
            if hi > lo:
                return 8 + n + lo, 8 + n + hi
    raise LookupError(f"no such tensor in {path}")


# -- one snapshot file ------------------------------------------------------------------------

def truncate(path: Path) -> None:
    """A torn write: the second half of the file is gone."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_logits(path: Path) -> None:
    """64 bytes of 0xFF (NaNs) over the stored logits."""
    lo, hi = _tensor_span(path, lambda name: name == "__logits__")
    _overwrite(path, lo, b"\xff" * min(64, hi - lo))


def garble_state(path: Path) -> None:
    """Random bytes in a state tensor: finite numbers, silently wrong if ever loaded."""
    lo, hi = _tensor_span(path, lambda name: not name.startswith("__") and name != "pos")
    rng = random.Random(hi)
    _overwrite(path, lo, bytes(rng.randrange(0x3C) for _ in range(min(256, hi - lo))))


def garble_header(path: Path) -> None:
    """Bytes inside the JSON header replaced."""
    n, _ = _header(path)
    _overwrite(path, 8 + n // 3, b"\x00\xff{]" * 4)


def wrong_shapes(path: Path) -> None:
    """A header that still parses, with one tensor's shape reversed (the byte count is
    unchanged, so the file is valid safetensors describing the wrong layout)."""
    n, header = _header(path)
    for name, info in header.items():
        shape = info.get("shape") if name != "__metadata__" else None
        if isinstance(shape, list) and len(shape) == 2 and shape[0] != shape[1]:
            info["shape"] = shape[::-1]
            break
    else:
        header["__logits__"]["shape"] = [1, *header["__logits__"]["shape"]]  # type: ignore[list-item]
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > n:
        raise ValueError("the rewritten header does not fit")
    _overwrite(path, 8, text + b" " * (n - len(text)))  # safetensors pads with spaces too


def directory(path: Path) -> None:
    """A directory where the snapshot file was (a bad sync, a confused script)."""
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


SNAPSHOT_FAULTS: dict[str, Callable[[Path], None]] = {
    "truncate": truncate, "garble_logits": garble_logits, "garble_state": garble_state,
    "garble_header": garble_header, "wrong_shapes": wrong_shapes, "directory": directory,
}


# -- the whole folder -------------------------------------------------------------------------

def _index(root: Path) -> Path:
    return root / "index.sqlite"


def index_reset(root: Path) -> None:
    """The index deleted (by a person, a cleanup script): its files become orphans."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_index(root)}{suffix}").unlink(missing_ok=True)


def index_garbage(root: Path) -> None:
    """8 KB of random bytes over the start of the index."""
    _overwrite(_index(root), 0, random.Random(8).randbytes(8192))


def index_header(root: Path) -> None:
    """The SQLite header garbled (the magic string and page size)."""
    _overwrite(_index(root), 0, b"\x00garbled header\x00" * 4)


def index_page(root: Path) -> None:
    """An inner page garbled: the header still says SQLite; reading the table fails."""
    size = int.from_bytes(_index(root).read_bytes()[16:18], "big") or 65536
    _overwrite(_index(root), size, b"\xff" * 256)  # page 2: the snapshots table's root


def index_directory(root: Path) -> None:
    index_reset(root)
    _index(root).mkdir()


def cache_is_file(root: Path) -> None:
    """The cache path is a file (someone wrote a log there)."""
    shutil.rmtree(root)
    root.write_text("not a cache\n")


FOLDER_FAULTS: dict[str, Callable[[Path], None]] = {
    "index_reset": index_reset, "index_garbage": index_garbage, "index_header": index_header,
    "index_page": index_page, "index_directory": index_directory,
    "cache_is_file": cache_is_file,
}


# -- small disks ------------------------------------------------------------------------------

def mount_tmpfs(where: Path, size: str = "2m") -> str | None:
    """Mount a ``size`` tmpfs at ``where``; None on success, else why not (not root, no
    mount permission in this container)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    return None if out.returncode == 0 else f"mount failed: {out.stderr.strip()}"


def remount_read_only(where: Path) -> None:
    """Make the tmpfs read-only (retried: a file a finished process wrote may still be
    closing, and the kernel refuses while one is open for writing)."""
    for _ in range(50):
        if subprocess.run(["mount", "-o", "remount,ro", str(where)],
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[str | None]:
    """A tmpfs at ``where`` for the block; yields None, or why none could be mounted."""
    why = mount_tmpfs(where, size)
    try:
        yield why
    finally:
        if why is None:
            unmount(where)


def fill(where: Path) -> None:
    """Fill the disk under ``where`` to the last byte."""
    with open(where / "filler", "wb", buffering=0) as f:
        for chunk in (65536, 1):
            try:
                while f.write(b"\0" * chunk):
                    pass
            except OSError:
                pass


# -- budgets --------------------------------------------------------------------------------

# An agent's calls: prompts that the caller expects to be almost all cached; the engine then
# reports no cache hit at all (evicted, or another process's prompt in between).
MISSER = textwrap.dedent("""
    import random, sys, anyio
    from whalebone.budget.guard import BudgetGuard, BudgetStop, CallPlan
    from whalebone.budget.policy import BudgetPolicy
    from whalebone.engine.base import Usage

    path, me = sys.argv[1], sys.argv[2]
    rng = random.Random(int(me))
    guard = BudgetGuard(path, policy=BudgetPolicy(on_cap="deny", poll_s=0.005))
    async def main():
        calls = 0
        try:
            while True:
                prompt = rng.randint(2000, 9000)
                plan = CallPlan("run" + me, "s" + me, "coder", "turn", "deepseek-v4-flash",
                                prompt, prompt - 100, 200)
                ticket = await guard.before_call(plan)
                hit = 0 if rng.random() < 0.7 else prompt - 100  # mostly misses
                guard.settle(ticket, Usage(prompt_tokens=prompt, prompt_cache_hit_tokens=hit,
                                           prompt_cache_miss_tokens=prompt - hit,
                                           completion_tokens=rng.randint(1, 201)))
                calls += 1
        except BudgetStop:
            print(calls)
    anyio.run(main)
""")
