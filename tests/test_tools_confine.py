from __future__ import annotations

import ctypes
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whalebone.core.errors import WhaleboneError
from whalebone.tools.confine import PathError, PathRefused, Root
from whalebone.tools.registry import ToolError

SECRET = "outside-secret-7f3a"

# Classic traversal payloads: every one must be refused by resolve() itself.
CLASSIC = [
    "..", "../", "../etc/passwd", "a/../../b", "a/..", "./..", "/etc/passwd", "/", "//etc",
    "/memoriesX/a", "/memories/../x", "/memories/a/../../x", "..\\..\\windows", "a\\b",
    "%2e%2e/%2e%2e/etc", "%2e%2e%2fetc", "..%2f..%2f", "%252e%252e%252f", "%c0%ae%c0%ae/",
    "a%00b", "a\x00b", "a\nb", "a\rb", "\x7f", "~/.ssh/id_rsa", "~root/x",
    "．．/x", "a／b", "..／x", "\u2024\u2024/x", "\u2025/x", "a\u2215b", "a\u2044b", "\ufe52\ufe52",
    "\uff0e\uff0e\uff0fx", "a\u29f5b", "\ufe68x", "\uff3c", "a\u200bb", "a\u202eb", "a\ufeffb",
    "a\ud800b", "x/" + "a" * 256, "/".join(["d"] * 65), "a\u3002b", "\u2026", "%2F", "%5c",
]


@pytest.fixture
def box(tmp_path: Path) -> tuple[Root, Path, Path]:
    """A root with a secret file beside it, and links inside that point at the secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    inside = tmp_path / "root"
    inside.mkdir()
    (inside / "notes.md").write_text("hello\n")
    (inside / "sub").mkdir()
    (inside / "sub" / "deep.md").write_text("deep\n")
    os.symlink(outside, inside / "out")  # a directory link
    os.symlink(outside / "secret", inside / "secret")  # a file link
    os.symlink("../../outside", inside / "sub" / "up")  # relative link
    return Root(inside, alias="/memories"), inside, outside


def test_refusals_are_whalebone_and_tool_errors() -> None:
    assert issubclass(PathRefused, PathError)
    assert issubclass(PathRefused, ToolError)
    assert issubclass(PathRefused, WhaleboneError)


@pytest.mark.parametrize("payload", CLASSIC)
def test_resolve_refuses_classic_traversal_payloads(box: tuple[Root, Path, Path],
                                                    payload: str) -> None:
    root, _, _ = box
    with pytest.raises(PathRefused):
        root.resolve(payload)


def test_resolve_maps_alias_and_plain_paths_to_parts(box: tuple[Root, Path, Path]) -> None:
    root, _, _ = box
    assert root.resolve("/memories") == ()
    assert root.resolve("/memories/") == ()
    assert root.resolve("") == ()
    assert root.resolve("./a//b/./c.md") == ("a", "b", "c.md")
    assert root.resolve("/memories/notes.md") == ("notes.md",)
    assert root.resolve("ünïcode façade.md") == ("ünïcode façade.md",)
    assert root.resolve("...md") == ("...md",)  # dots inside a name are a name


def test_root_without_alias_refuses_every_absolute_path(tmp_path: Path) -> None:
    root = Root(tmp_path)
    with pytest.raises(PathRefused, match="absolute"):
        root.resolve("/memories/a")


def test_symlinks_are_refused_wherever_they_appear(box: tuple[Root, Path, Path]) -> None:
    root, _, outside = box
    for path in ["out/secret", "secret", "sub/up/secret", "out"]:
        with pytest.raises(PathRefused, match="symbolic link"):
            root.read_text(path)
    with pytest.raises(PathRefused):
        root.write_atomic("out/new.md", "x")
    with pytest.raises(PathRefused):
        root.listdir("out")
    assert sorted(os.listdir(outside)) == ["secret"]


def test_writing_over_a_symlink_name_is_refused_not_followed(box: tuple[Root, Path, Path]) -> None:
    root, inside, outside = box
    with pytest.raises(PathRefused, match="not a regular file"):
        root.write_atomic("secret", "overwrite")
    assert (outside / "secret").read_text() == SECRET
    assert os.path.islink(inside / "secret")


def test_fifo_socket_and_device_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        root = Root(tmp_path)
        with pytest.raises(PathRefused, match="FIFO"):
            root.read_text("fifo")  # would hang forever if it were opened for reading
        with pytest.raises(PathRefused, match="socket"):
            root.read_text("sock")
        with pytest.raises(PathRefused, match="FIFO"):
            root.write_atomic("fifo", "x")
    finally:
        sock.close()
    dev = Root("/dev")
    with pytest.raises(PathRefused, match="device"):
        dev.read_bytes("null")


def test_a_file_with_other_hard_links_is_refused(box: tuple[Root, Path, Path]) -> None:
    root, inside, outside = box
    os.link(outside / "secret", inside / "hard")
    with pytest.raises(PathRefused, match="hard links"):
        root.read_text("hard")
    with pytest.raises(PathRefused, match="hard links"):
        root.open("hard", os.O_WRONLY | os.O_TRUNC)
    assert (outside / "secret").read_text() == SECRET  # not truncated before the check
    assert Root(inside, allow_hardlinks=True).read_text("hard") == SECRET


def test_read_only_root_refuses_every_change(box: tuple[Root, Path, Path]) -> None:
    _, inside, _ = box
    ro = Root(inside, read_only=True)
    assert ro.read_text("notes.md") == "hello\n"
    for change in (lambda: ro.write_atomic("n.md", "x"), lambda: ro.unlink("notes.md"),
                   lambda: ro.rename("notes.md", "m.md"), lambda: ro.mkdir("d"),
                   lambda: ro.remove_tree("sub"),
                   lambda: ro.open("notes.md", os.O_WRONLY | os.O_APPEND)):
        with pytest.raises(PathRefused, match="read-only"):
            change()
    assert sorted(os.listdir(inside)) == ["notes.md", "out", "secret", "sub"]


def test_write_atomic_creates_parents_and_exclusive_refuses_overwrite(tmp_path: Path) -> None:
    root = Root(tmp_path)
    assert root.write_atomic("a/b/c.md", "one") == 3
    assert (tmp_path / "a" / "b" / "c.md").read_text() == "one"
    with pytest.raises(PathError, match="already exists"):
        root.write_atomic("a/b/c.md", "two", exclusive=True)
    root.write_atomic("a/b/c.md", "three")
    assert (tmp_path / "a" / "b" / "c.md").read_text() == "three"
    assert os.listdir(tmp_path / "a" / "b") == ["c.md"]  # no temp file left behind
    with pytest.raises(PathError, match="does not exist"):
        root.write_atomic("x/y.md", "z", parents=False)


def test_rename_never_overwrites_and_moves_directories(tmp_path: Path) -> None:
    root = Root(tmp_path)
    root.write_atomic("a.md", "A")
    root.write_atomic("b.md", "B")
    with pytest.raises(PathError, match="already exists"):
        root.rename("a.md", "b.md")
    assert root.read_text("b.md") == "B"
    root.write_atomic("d/x.md", "X")
    root.rename("d", "e/f")
    assert root.read_text("e/f/x.md") == "X"
    with pytest.raises(PathError, match="inside itself"):
        root.rename("e", "e/f/g")
    with pytest.raises(PathError, match="does not exist"):
        root.rename("nope.md", "n.md")


def test_remove_tree_removes_links_not_their_targets(box: tuple[Root, Path, Path]) -> None:
    root, inside, outside = box
    root.remove_tree("sub")  # holds a link to the outside directory
    assert not (inside / "sub").exists()
    assert (outside / "secret").read_text() == SECRET
    with pytest.raises(PathError, match="not a directory"):
        root.remove_tree("notes.md")
    root.unlink("out")  # the link itself goes, the directory stays
    assert outside.is_dir()


def test_listdir_and_walk_describe_without_following(box: tuple[Root, Path, Path]) -> None:
    root, _, _ = box
    kinds = {e.name: e.kind for e in root.listdir("/memories")}
    assert kinds == {"notes.md": "file", "out": "symlink", "secret": "symlink", "sub": "dir"}
    assert sorted(p for p, _ in root.walk()) == [("notes.md",), ("sub", "deep.md")]
    both = {p: stat.S_ISDIR(st.st_mode) for p, st in root.walk(directories=True)}
    assert both == {(): True, ("notes.md",): False, ("sub",): True, ("sub", "deep.md"): False}


def test_read_bytes_refuses_a_file_over_the_cap(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(PathError, match="over the cap"):
        Root(tmp_path).read_bytes("big", max_bytes=99)
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(PathError, match="UTF-8"):
        Root(tmp_path).read_text("bin")


# -- fuzz: thousands of generated hostile paths, zero escapes -----------------------------

_PIECES = ["..", ".", "", "/", "//", "\\", "%2e", "%2f", "%252e", "%00", "\x00", "~", "out",
           "secret", "sub", "up", "notes.md", "x", "．", "／", "\u2024", "\ufe52", "\u2215",
           "\u200b", "\u202e", "/memories", "/etc", "passwd", "..;", "...", " ", "\n", "é"]


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8),
       joiner=st.sampled_from(["/", "", "\\", "%2f"]))
def test_fuzzed_hostile_paths_never_escape(box: tuple[Root, Path, Path], pieces: list[str],
                                           joiner: str) -> None:
    root, inside, outside = box
    path = joiner.join(pieces)
    try:
        parts = root.resolve(path)
    except PathRefused:
        return
    assert ".." not in parts and all("/" not in p and "\x00" not in p for p in parts)
    for attempt in (lambda: root.read_text(path), lambda: root.listdir(path),
                    lambda: root.write_atomic(path, "fuzz"), lambda: root.stat(path)):
        try:
            out = attempt()
        except PathError:
            continue
        assert SECRET not in repr(out)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == SECRET
    for written in inside.rglob("*"):
        if not written.is_symlink():
            assert written.resolve().is_relative_to(inside.resolve())


# -- races ------------------------------------------------------------------------------------

def _exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE): `a` is never absent."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, bytes(a), -100, bytes(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        raise OSError(ctypes.get_errno(), "renameat2")


def test_symlink_swapped_in_during_use_is_refused(box: tuple[Root, Path, Path]) -> None:
    """A thread keeps exchanging directory `d` with a link to the outside (atomically, so `d`
    always exists); every read and write through `d` either works inside or is refused as a
    link, whatever the interleaving, and the outside is never touched."""
    root, inside, outside = box
    (inside / "d").mkdir()
    (inside / "d" / "secret").write_text("inside copy")
    os.symlink(outside, inside / "d_link")
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            _exchange(inside / "d", inside / "d_link")
            time.sleep(0.0002)

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    reads = link_refusals = 0
    try:
        for i in range(3000):
            try:
                assert root.read_text("d/secret") == "inside copy"
                reads += 1
            except PathRefused as e:
                assert "symbolic link" in str(e)
                link_refusals += 1
            try:
                root.write_atomic(f"d/w{i % 5}", "w", parents=False)
            except PathRefused as e:
                assert "symbolic link" in str(e)
                link_refusals += 1
    finally:
        stop.set()
        t.join()
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == SECRET
    assert reads > 0 and link_refusals > 0  # both interleavings really happened


def test_a_killed_writer_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    """A writer replacing a 4 MB file in a loop is SIGKILLed; the file is whole, old or new."""
    (tmp_path / "m.md").write_text("A" * 4_000_000)
    code = (
        "import sys, itertools\n"
        "from whalebone.tools.confine import Root\n"
        "r = Root(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "for i in itertools.count():\n"
        "    r.write_atomic('m.md', ('AB'[i % 2]) * 4_000_000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    for _ in range(20):
        data = (tmp_path / "m.md").read_text()
        assert data in ("A" * 4_000_000, "B" * 4_000_000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    data = (tmp_path / "m.md").read_text()
    assert data in ("A" * 4_000_000, "B" * 4_000_000)
    # at most one orphaned temp file, hidden, which is not the memory file
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".")] == ["m.md"]


def test_file_swapped_for_a_link_during_use_is_refused(box: tuple[Root, Path, Path]) -> None:
    """The last component exchanged with a link to the outside file: never read, never
    truncated or replaced through the link."""
    root, inside, outside = box
    (inside / "f").write_text("inside copy")
    os.symlink(outside / "secret", inside / "f_link")
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            _exchange(inside / "f", inside / "f_link")
            time.sleep(0.0002)

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    outcomes: set[str] = set()
    try:
        for _ in range(2000):
            try:
                assert root.read_text("f") in ("inside copy", "w")
                outcomes.add("read")
            except PathRefused as e:
                assert "symbolic link" in str(e)
                outcomes.add("refused")
            try:
                fd = root.open("f", os.O_WRONLY | os.O_TRUNC)
                os.write(fd, b"w")
                os.close(fd)
            except PathRefused:
                outcomes.add("refused")
    finally:
        stop.set()
        t.join()
    assert (outside / "secret").read_text() == SECRET
    assert outcomes == {"read", "refused"}


def test_a_name_of_the_longest_length_can_be_written_atomically(tmp_path: Path) -> None:
    name = "é" * 127  # 254 bytes in UTF-8: at the limit, and no room for a temp-name prefix
    root = Root(tmp_path)
    root.write_atomic(name, "x")
    root.write_atomic(name, "y")
    assert root.read_text(name) == "y" and os.listdir(tmp_path) == [name]
