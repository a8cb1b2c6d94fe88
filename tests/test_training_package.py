"""The training room works from an installed wheel: its data ships inside the package, so
nothing reads ``bench/`` or any other file of a source checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import whalebone, whalebone.training.audit as audit, whalebone.training.card as card
assert whalebone.__file__.startswith({site!r}), whalebone.__file__
held = audit.held_out_cases()
tasks = audit.audit_tasks(4, seed=3)
print(len(held), sorted({{c["label"] for c in held}}), len(tasks), card.TEMPLATE.exists())
"""


def test_an_installed_wheel_reads_the_auditor_cases_from_its_own_package(tmp_path: Path) -> None:
    # build from a copy of the tracked files, so the checkout gets no build/ folder
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("whalebone-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "whalebone/training/assets/budget_cases.jsonl" in names
    assert not any(n.startswith("whalebone/engine/nano/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = tmp_path / "elsewhere"  # no checkout around: bench/ cannot be found by accident
    run.mkdir()
    out = subprocess.run([sys.executable, "-c", PROBE.format(site=str(site))], cwd=run,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["48", "['doomed',", "'productive']", "4", "True"]
