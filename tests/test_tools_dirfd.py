from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from whalebone.tools.dirfd import DIR_FLAGS, kind_of, lstat_at, open_dir, quote, rename_noreplace
from whalebone.tools.pathcheck import PathError, PathRefused


@pytest.fixture
def dfd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, DIR_FLAGS)
    yield fd
    os.close(fd)


def test_open_dir_opens_directories_only_and_refuses_links(tmp_path: Path, dfd: int) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    (tmp_path / "f").write_text("f")
    os.symlink(tmp_path / "d", tmp_path / "link")
    fd = open_dir(dfd, ("d",))
    try:
        assert os.listdir(fd) == ["x"]
    finally:
        os.close(fd)
    with pytest.raises(PathRefused, match="symbolic link"):
        open_dir(dfd, ("link",))
    with pytest.raises(PathError, match="not a directory"):
        open_dir(dfd, ("f",))
    with pytest.raises(FileNotFoundError):
        open_dir(dfd, ("absent",))


def test_rename_noreplace_refuses_an_existing_file_or_directory(tmp_path: Path, dfd: int) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(dfd, "a", dfd, "b")
    with pytest.raises(FileExistsError):
        rename_noreplace(dfd, "d1", dfd, "d2")
    rename_noreplace(dfd, "a", dfd, "c")
    rename_noreplace(dfd, "d1", dfd, "d3")
    assert sorted(os.listdir(tmp_path)) == ["b", "c", "d2", "d3"]
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "c").read_text() == "a"


def test_lstat_at_does_not_follow_and_kind_of_names_modes(tmp_path: Path, dfd: int) -> None:
    os.symlink("/nonexistent", tmp_path / "dangling")
    st = lstat_at(dfd, "dangling")
    assert st is not None and stat.S_ISLNK(st.st_mode)
    assert lstat_at(dfd, "absent") is None
    assert kind_of(stat.S_IFIFO) == "a FIFO" and kind_of(stat.S_IFCHR) == "a device file"
    assert kind_of(stat.S_IFSOCK) == "a socket" and kind_of(stat.S_IFDIR) == "a directory"


def test_quote_writes_paths_under_the_alias() -> None:
    assert quote(("a", "b.md"), "/memories") == "'/memories/a/b.md'"
    assert quote((), "/memories") == "'/memories'"
    assert quote(("a",), None) == "'a'"
