from __future__ import annotations

from pathlib import Path

import pytest

from whalebone.memory.home import MemoryHome, check_scope_name, default_home
from whalebone.tools.confine import PathRefused


def test_layout_scopes_index_and_audit_beside_each_other(tmp_path: Path) -> None:
    home = MemoryHome(tmp_path)
    scope = home.scope("project:whalebone", max_file_bytes=1000)
    scope.create("a.md", "alpha")
    assert (tmp_path / "memory" / "project:whalebone" / "a.md").read_text() == "alpha"
    assert (tmp_path / "memory-index" / "project:whalebone.sqlite").exists()
    assert scope.max_file_bytes == 1000
    home.audit.append(who="t", scope=scope.name, command="view")
    assert (tmp_path / "memory-audit.sqlite").exists()
    assert home.scopes() == ["project:whalebone"]
    assert list((tmp_path / "memory").iterdir()) == [tmp_path / "memory" / "project:whalebone"]
    scope.close()
    home.close()


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "a b", "x" * 101,
                                  "a\x00", "ａ", "a\\b", "-flag"])
def test_bad_scope_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathRefused, match="scope name"):
        MemoryHome(tmp_path).scope(name)
    assert not (tmp_path / "memory").exists() or list((tmp_path / "memory").iterdir()) == []


def test_good_scope_names() -> None:
    for name in ("user:alice", "agent:triage-2", "project:whale.bone", "alice@example.com"):
        assert check_scope_name(name) == name


def test_read_only_scope_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PathRefused, match="does not exist"):
        MemoryHome(tmp_path).scope("user:nobody", read_only=True)


def test_default_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("WHALEBONE_HOME", str(tmp_path))
    assert default_home() == tmp_path
    monkeypatch.delenv("WHALEBONE_HOME")
    assert default_home() == Path.home() / ".whalebone"


def test_a_scope_or_index_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "user:eve").symlink_to(tmp_path / "elsewhere")
    home = MemoryHome(tmp_path)
    with pytest.raises(PathRefused, match="symbolic link"):
        home.scope("user:eve")
    assert home.scopes() == []
    (tmp_path / "memory-index").mkdir()
    (tmp_path / "memory-index" / "user:bob.sqlite").symlink_to(tmp_path / "elsewhere" / "x")
    with pytest.raises(PathRefused, match="symbolic link"):
        home.scope("user:bob")
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("linked", ["memory", "memory-index"])
def test_a_memory_root_that_is_a_link_is_refused(tmp_path: Path, linked: str) -> None:
    # A link planted in place of the folder of every scope would put all of them elsewhere.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home_dir = tmp_path / "home"
    home_dir.mkdir()
    (home_dir / linked).symlink_to(elsewhere)
    home = MemoryHome(home_dir)
    with pytest.raises(PathRefused, match="symbolic link"):
        home.scope("user:eve")
    with pytest.raises(PathRefused, match="symbolic link"):
        home.attach("user:eve")
    if linked == "memory":
        (elsewhere / "user:eve").mkdir()
        assert home.scopes() == []
        (elsewhere / "user:eve").rmdir()
    assert list(elsewhere.iterdir()) == []


def test_the_memory_command_refuses_a_linked_memory_root(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from whalebone.agent.cli import main

    (tmp_path / "elsewhere" / "user:bob").mkdir(parents=True)
    (tmp_path / "elsewhere" / "user:bob" / "prefs.md").write_text("secret\n")
    (tmp_path / "memory").symlink_to(tmp_path / "elsewhere")
    assert main(["memory", "--home", str(tmp_path), "view", "user:bob"]) == 1
    assert "symbolic link" in capsys.readouterr().err
