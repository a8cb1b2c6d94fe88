"""Credentials out of text: a corpus of the shapes keys take (each redacted, with a visible
marker) and of ordinary text that must pass untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from whalebone.agent.store import SessionStore
from whalebone.tools.redact import add_secret, is_secret_name, redact, redact_data

KEYS = [
    ("sk-" + "a1B2" * 8, "api key"), ("sk-proj-" + "x9" * 24, "api key"),
    ("sk-ant-api03-" + "Q" * 40, "api key"), ("ghp_" + "Z" * 36, "api key"),
    ("github_pat_11ABCDEFG_" + "h" * 40, "api key"), ("AKIAIOSFODNN7EXAMPLE", "api key"),
    ("xoxb-1234567890-abcdefghij", "api key"), ("AIza" + "S" * 35, "api key"),
    ("glpat-" + "k" * 20, "api key"), ("hf_" + "m" * 34, "api key"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl", "token"),
]


@pytest.mark.parametrize(("key", "label"), KEYS)
def test_keys_of_common_shapes_are_redacted(key: str, label: str) -> None:
    out = redact(f"found {key} in the log")
    assert key not in out and f"[redacted: {label}]" in out and out.startswith("found ")


@pytest.mark.parametrize(("text", "secret"), [
    ("Authorization: Bearer abc.DEF-ghi_jkl~012", "abc.DEF-ghi_jkl~012"),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "dXNlcjpwYXNzd29yZA=="),
    ("postgres://admin:hunter2secret@db:5432/x", "hunter2secret"),
    ("DB_PASSWORD=correct-horse", "correct-horse"),
    ("export API_TOKEN='t0k3n-value'", "t0k3n-value"),
    ('{"client_secret": "s3cr3t-v4lue", "id": 1}', "s3cr3t-v4lue"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXk"),
    ("-----BEGIN EC PRIVATE KEY-----\ncut off mid-block MHcCAQEE", "MHcCAQEE"),
])
def test_secret_forms_are_redacted(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "[redacted: " in out


@pytest.mark.parametrize("text", [
    "token = tokens[0]", "prompt_tokens: 1234", "Author: Jane Doe <jane@x.org>",
    "password = get_password()", "bypass: yes", "max_tokens=512", "sk-learn is a library",
    "see https://example.com/path?q=1", "commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f",
    "def tokenize(text): return text.split()",
])
def test_ordinary_text_passes_untouched(text: str) -> None:
    assert redact(text) == text


def test_held_secret_values_are_redacted_wherever_they_appear(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "plain-looking-value-42")
    monkeypatch.setenv("EDITOR", "vim")
    assert redact("x plain-looking-value-42 y") == "x [redacted: secret value] y"
    add_secret("registered-by-a-host-99")
    assert "registered-by-a-host-99" not in redact("k=registered-by-a-host-99")
    assert redact_data({"a": ["plain-looking-value-42"], "n": 1}) == {
        "a": ["[redacted: secret value]"], "n": 1}


@pytest.mark.parametrize(("name", "secret"), [
    ("DEEPSEEK_API_KEY", True), ("GITHUB_TOKEN", True), ("AWS_ACCESS_KEY_ID", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True), ("AZURE_CLIENT_SECRET", True),
    ("MY_PASSWORD", True), ("SSH_AUTH_SOCK", True), ("WHALEBONE_SERVE_KEY", True),
    ("PATH", False), ("HOME", False), ("WHALEBONE_HOME", False), ("LANG", False),
    ("PWD", False), ("TERM", False), ("EDITOR", False),
])
def test_which_environment_names_are_secret(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_the_session_store_never_keeps_a_key(tmp_path: Path) -> None:
    key = "sk-" + "q7" * 20
    store = SessionStore(tmp_path / "s.db")
    sid = store.create(title=f"use {key}")
    with store.open(sid) as session:
        session.append({"role": "user", "content": f"my key is {key}"})
        session.call_started("c1", "shell", {"command": f"echo {key}"}, False)
        session.call_finished("c1", f"exit code 0\n{key}", False)
    store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert key.encode() not in data and b"[redacted: api key]" in data


def test_a_journal_from_before_process_groups_still_opens(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE tool_calls (session TEXT NOT NULL, call_id TEXT NOT NULL, name TEXT"
               " NOT NULL, arguments TEXT NOT NULL, idempotent INTEGER NOT NULL, status TEXT NOT"
               " NULL, result TEXT, is_error INTEGER, started REAL NOT NULL, finished REAL,"
               " PRIMARY KEY (session, call_id))")
    db.commit()
    db.close()
    store = SessionStore(tmp_path / "old.db")
    sid = store.create()
    with store.open(sid) as session:
        session.call_started("c1", "shell", {}, False)
        session.call_process("c1", 4242, 17, True)
    assert store.journal(sid)[0].process == {"pgid": 4242, "started": 17, "sandboxed": 1}
    store.close()
