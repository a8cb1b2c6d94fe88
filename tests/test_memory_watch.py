from __future__ import annotations

import os
from pathlib import Path

from whalebone.memory.watch import ChangeWatch


def armed(tmp_path: Path, *dirs: tuple[str, ...]) -> ChangeWatch:
    watch = ChangeWatch()
    watch.begin(tmp_path)
    for parts in ((), *dirs):
        watch.add(parts)
    watch.end()
    return watch


def test_quiet_tree_reports_no_change_and_any_edit_reports_one(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.md").write_text("x")
    watch = armed(tmp_path, ("d",))
    assert watch.available
    assert watch.changed() is False
    with open(tmp_path / "d" / "f.md", "a") as f:
        f.write("y")
    assert watch.changed() is True
    assert watch.changed() is True  # stays "maybe changed" until a walk re-arms it
    watch.begin(tmp_path)
    watch.add(())
    watch.add(("d",))
    watch.end()
    assert watch.changed() is False
    os.utime(tmp_path / "d" / "f.md", ns=(1, 1))  # a touch alone is a change too
    assert watch.changed() is True
    watch.close()


def test_creations_deletions_and_renames_are_changes(tmp_path: Path) -> None:
    for act in (lambda: (tmp_path / "new").mkdir(),
                lambda: (tmp_path / "new").rename(tmp_path / "old"),
                lambda: (tmp_path / "old").rmdir()):
        watch = armed(tmp_path)
        act()
        assert watch.changed() is True
        watch.close()


def test_a_directory_that_cannot_be_watched_means_always_walk(tmp_path: Path) -> None:
    watch = armed(tmp_path, ("missing",))
    assert watch.changed() is True
    watch.close()
    never = ChangeWatch.unavailable()
    never.begin(tmp_path)
    never.add(())
    never.end()
    assert not never.available and never.changed() is True
