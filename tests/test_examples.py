"""The files under examples/ work as the README and the help texts say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_scripted_example_runs_a_real_tool_call(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "WHALEBONE_HOME": str(tmp_path / ".wb")}
    done = subprocess.run(
        [sys.executable, "-m", "whalebone.agent.cli", "run", "--engine",
         f"scripted:{ROOT / 'examples' / 'calculator.jsonl'}", "What is 12*7?"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "← calculator: 84" in done.stdout  # the real calculator ran
    assert "12 × 7 = 84." in done.stdout


@pytest.mark.parametrize("command", [["run"], ["sessions", "resume"], ["chat"], ["serve"],
                                     ["submit"]])
def test_every_engine_option_documents_the_one_script_format(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "whalebone.agent.cli", *command, "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 0
    assert "scripted:FILE.jsonl" in done.stdout and "examples/calculator.jsonl" in done.stdout
    assert "FILE.json " not in done.stdout and "FILE.json)" not in done.stdout
