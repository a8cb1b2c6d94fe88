"""The codec's commands, run as a person runs them: the installed ``whalebone`` script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import VECTORS

from whalebone.dsml import tokens as T


def whalebone(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_render_prints_the_exact_prompt() -> None:
    run = whalebone("render", str(VECTORS / "test_input_2.json"))
    assert run.returncode == 0
    assert run.stdout == (VECTORS / "test_output_2.txt").read_text(encoding="utf-8")


def test_render_counts_tokens_with_the_real_tokenizer() -> None:
    run = whalebone("render", "-", "--mode", "chat", "--tokens", "--ids",
                    stdin=json.dumps([{"role": "user", "content": "hi"}]))
    out = json.loads(run.stdout)
    assert out["ids"][0] == 0 and out["tokens"] == len(out["ids"])
    assert 128803 in out["ids"] and 128804 in out["ids"]  # <｜User｜>, <｜Assistant｜>
    alone = whalebone("render", "-", "--mode", "chat", "--tokens",
                      stdin=json.dumps([{"role": "user", "content": "hi"}]))
    assert json.loads(alone.stdout) == {"tokens": out["tokens"]}  # one shape, ids or not
    implied = whalebone("render", "-", "--mode", "chat", "--ids",
                        stdin=json.dumps([{"role": "user", "content": "hi"}]))
    assert json.loads(implied.stdout) == out


def test_parse_reports_problems_and_exit_status() -> None:
    good = whalebone("parse", "-", stdin=f"because</think>hello{T.EOS}\n")
    assert good.returncode == 0 and json.loads(good.stdout)["content"] == "hello"
    bad = whalebone("parse", "-", stdin="never closed")
    assert bad.returncode == 1
    assert [e["kind"] for e in json.loads(bad.stdout)["errors"]] == [
        "missing_think_end", "missing_eos"]


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    run = whalebone("render", str(broken))
    assert run.returncode == 2 and "invalid JSON" in run.stderr
    run = whalebone("render", "-", stdin=json.dumps([{"role": "wizard", "content": "x"}]))
    assert run.returncode == 2 and "unknown role 'wizard'" in run.stderr
    run = whalebone("render", str(tmp_path / "missing.json"))
    missing = tmp_path / "missing.json"
    assert run.returncode == 2 and run.stderr == f"whalebone render: no such file: {missing}\n"
