from __future__ import annotations

import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whalebone.tools.pathcheck import MAX_NAME_BYTES, PathRefused, split_path


def test_plain_paths_split_into_names() -> None:
    assert split_path("a/b/c.md") == ("a", "b", "c.md")
    assert split_path("") == () and split_path(".") == () and split_path("./") == ()
    assert split_path(("a", "b")) == ("a", "b")
    assert split_path("/memories/x", "/memories") == ("x",)
    assert split_path("名前/ノート.md") == ("名前", "ノート.md")


@pytest.mark.parametrize("parts", [("..",), ("a", "."), ("",), ("a/b",), ("a\x00",), ("．．",)])
def test_already_split_parts_get_the_same_checks(parts: tuple[str, ...]) -> None:
    with pytest.raises(PathRefused):
        split_path(parts)


def test_non_text_and_oversized_paths_are_refused() -> None:
    for bad in (b"a", None, 3, ["a"]):
        with pytest.raises(PathRefused, match="must be text"):
            split_path(bad)  # type: ignore[arg-type]
    with pytest.raises(PathRefused, match="longer than"):
        split_path("a/" * 3000)
    with pytest.raises(PathRefused, match="255 bytes"):
        split_path("é" * (MAX_NAME_BYTES // 2 + 1))  # 2 bytes each in UTF-8
    split_path("é" * (MAX_NAME_BYTES // 2))


def test_messages_name_the_trick() -> None:
    with pytest.raises(PathRefused, match=r"U\+2024, a look-alike of '\.'"):
        split_path("\u2024\u2024/etc")
    with pytest.raises(PathRefused, match=r"U\+2215, which looks like"):
        split_path("a\u2215b")
    with pytest.raises(PathRefused, match="percent-escape"):
        split_path("%2e%2e")
    with pytest.raises(PathRefused, match="absolute; give a path under /memories"):
        split_path("/etc/passwd", "/memories")


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=40))
def test_no_accepted_path_can_mean_a_step_outside(text: str) -> None:
    """Whatever the text, an accepted path names only ordinary components, and neither
    NFKC folding nor percent-decoding (what another layer might apply) makes it leave."""
    try:
        parts = split_path(text, "/memories")
    except PathRefused:
        return
    for name in parts:
        for seen in (name, unicodedata.normalize("NFKC", name), unquote(name)):
            assert seen not in ("", ".", "..")
            assert not any(c in seen for c in "/\\\x00")
    assert not text.startswith("/") or text == "/memories" or text.startswith("/memories/")
