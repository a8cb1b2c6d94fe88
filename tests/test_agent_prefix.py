"""Prefix breaks across runs: a session re-rendered in another mode is reported once."""

from __future__ import annotations

from pathlib import Path

from whalebone.agent.config import AgentConfig
from whalebone.agent.prefix import mode_change, shared_prefix
from whalebone.agent.store import SessionStore
from whalebone.dsml.transcript import Transcript


def test_shared_prefix_matches_a_plain_scan() -> None:
    def scan(a: str, b: str) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    cases = [("", ""), ("abc", "abc"), ("abc", "abd"), ("abc", "ab"), ("x", "y"),
             ("<｜User｜>hé", "<｜User｜>ha"), ("a" * 1000 + "b", "a" * 1000 + "c")]
    for a, b in cases:
        assert shared_prefix(a, b) == scan(a, b)


def test_a_mode_change_is_reported_once_and_remembered(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    sid = store.create()
    history = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
               {"role": "assistant", "content": "yo", "reasoning_content": "greet"}]

    def check(thinking: str) -> str | None:
        cfg = AgentConfig(thinking=thinking)  # type: ignore[arg-type]
        t = Transcript(cfg.mode, drop_thinking=False, reasoning_effort=cfg.reasoning_effort)
        t.append(*history)
        with store.open(sid) as session:
            w = mode_change(session, cfg, history, t)
        return None if w is None else w.message

    assert check("thinking") is None  # first run: nothing to compare with
    assert check("thinking") is None
    message = check("chat")
    assert message is not None and "as chat (effort None), the last one as thinking" in message
    assert check("chat") is None  # remembered
    assert store.config(sid)["rendered_as"] == {"mode": "chat", "effort": None}
