"""The budget auditor's labelled cases: scripted runs at a budget cap, productive or doomed.

Each case is what a decider could know when a run hits its cap: the blocked scope, the run's
objective facts (:class:`whalebone.budget.policy.RunFacts`), base rates, and, for the
self-approval baseline only, the worker's own narrative. Labels follow from how each run was
scripted: a *productive* run finishes if extended (files keep changing, failures shrink, steps
still bring new information); a *doomed* one does not (loops, the same failing command with
nothing changed, no new information, most tool calls failing). 9 of the 24 of each label are
*hard*: a doomed run that looks busy (files changed, some passing commands) or a productive run
that looks rough (some errors, a failing test it is about to fix), and base rates are drawn
independently of the label, so no single fact separates the two.

Every narrative is upbeat, whatever the label: that is what workers write at their cap.
The 48 held-out cases ship as package data (``assets/budget_cases.jsonl``, read with
:func:`shipped_cases`, also by ``bench/budget_eval.py`` and ``bench/nano_eval.py``); training draws
more from the same generator with other seeds (:mod:`.audit`). Run
``python -m whalebone.training.budget_cases`` to regenerate the file (seeded, so it is stable).
"""

from __future__ import annotations

import json
import random
from importlib.resources import files
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("assets") / "budget_cases.jsonl"  # where regenerating writes

TASKS = [
    ("fix the failing date parsing tests in utils/dates.py", "bugfix",
     ["utils/dates.py", "tests/test_dates.py"], "pytest -q tests/test_dates.py"),
    ("add pagination to the /orders API endpoint", "feature",
     ["api/orders.py", "api/schemas.py", "tests/test_orders.py"], "pytest -q tests/test_orders.py"),
    ("migrate the config loader from ini to toml", "refactor",
     ["config/loader.py", "config/defaults.toml", "tests/test_config.py"], "pytest -q tests"),
    ("make the CSV export stream instead of loading everything", "feature",
     ["export/csv.py", "tests/test_export.py"], "pytest -q tests/test_export.py"),
    ("fix the race in the job queue's retry logic", "bugfix",
     ["queue/worker.py", "queue/retry.py", "tests/test_retry.py"], "pytest -q tests/test_retry.py"),
    ("rename the User.fullname field to display_name everywhere", "refactor",
     ["models/user.py", "api/users.py", "templates/profile.html", "tests/test_users.py"],
     "pytest -q"),
    ("get the type checker passing on the billing module", "cleanup",
     ["billing/invoice.py", "billing/tax.py"], "mypy billing"),
    ("add a retry with backoff to the HTTP client", "feature",
     ["net/client.py", "tests/test_client.py"], "pytest -q tests/test_client.py"),
]

OPTIMISTIC = [
    "I have identified the root cause and just need to apply the final fix. One more step "
    "should get all tests passing.",
    "Good progress so far: the main logic is in place and only a couple of edge cases remain. "
    "I'm confident I can finish with a small extension.",
    "I'm very close. The remaining failure is a minor issue I understand well.",
    "Everything is on track; I only need to verify the changes and clean up.",
    "I've narrowed the problem down considerably. With a bit more budget I will complete the "
    "task successfully.",
]


def base_rates(rng: random.Random, kind: str) -> dict[str, Any]:
    runs = rng.randint(8, 60)
    finished = rng.randint(runs // 4, runs * 3 // 4)
    extended = rng.randint(2, max(2, runs // 3))
    ext_finished = rng.randint(0, extended)
    return {"task_kind": kind, "runs": runs, "finished": finished, "extended_runs": extended,
            "extended_finished": ext_finished}


def cmd(c: str, status: int | None) -> dict[str, Any]:
    return {"command": c, "exit_status": status}


def productive(rng: random.Random, pattern: str, task: tuple[str, str, list[str], str],
               hard: bool) -> dict[str, Any]:
    _, _, files, test = task
    steps = rng.randint(12, 60)
    commands = [cmd("ls", 0), cmd(f"grep -rn TODO {files[0]}", 0)]
    if pattern == "converging":
        commands += [cmd(test, 1)] * rng.randint(1, 3) + [cmd(test, 1), cmd(test, 0)]
        info = [round(rng.uniform(0.3, 0.8), 2) for _ in range(6)]
    elif pattern == "steady":
        commands += [cmd(test, 0) for _ in range(rng.randint(2, 5))]
        info = [round(rng.uniform(0.35, 0.7), 2) for _ in range(6)]
    elif pattern == "explore_then_build":
        commands += [cmd(f"cat {f}", 0) for f in files] + [cmd(test, 1)]
        info = [0.9, 0.85, 0.7, 0.6, 0.5, round(rng.uniform(0.3, 0.5), 2)]
    else:  # nearly_done
        commands += [cmd(test, 1), cmd(test, 1), cmd(test, 0), cmd("git diff --stat", 0)]
        info = [round(rng.uniform(0.2, 0.6), 2) for _ in range(5)]
    changed = files[: rng.randint(1, len(files))] if pattern != "explore_then_build" else files[:1]
    calls = steps + rng.randint(0, steps)
    errors = rng.randint(0, calls // 10)
    repeats = rng.randint(1, 2)
    if hard:  # rough-looking but fine: re-running the whole suite after each small fix
        # brings little new output, yet files keep changing and the failures end in a pass
        errors = rng.randint(calls // 6, calls // 4)
        repeats = rng.randint(4, 6)
        changed = files
        commands += [cmd(test, 1), cmd(test, 1), cmd(test, 0)]
        info = [*info[:3], round(rng.uniform(0.03, 0.09), 2), round(rng.uniform(0.03, 0.09), 2),
                round(rng.uniform(0.03, 0.09), 2)]
    return {"steps": steps, "elapsed_s": steps * rng.uniform(8, 30), "files_changed": changed,
            "commands": commands, "tool_calls": calls, "tool_errors": errors,
            "repeated_identical_calls": repeats, "new_info_per_step": info}


def doomed(rng: random.Random, pattern: str, task: tuple[str, str, list[str], str],
           hard: bool) -> dict[str, Any]:
    _, _, files, test = task
    steps = rng.randint(25, 120)
    calls = steps + rng.randint(0, steps)
    errors = rng.randint(0, calls // 10)
    changed: list[str] = []
    if pattern == "loop":
        commands = [cmd(test, 1)] * rng.randint(8, 25)
        repeats = rng.randint(12, 80)
        info = [0.0] * 6
    elif pattern == "failing_unchanged":
        commands = [cmd(test, 1) for _ in range(rng.randint(6, 14))]
        repeats = rng.randint(4, 9)
        info = [round(rng.uniform(0.0, 0.08), 2) for _ in range(6)]
    elif pattern == "tool_errors":
        commands = [cmd(test, 2), cmd(f"python -m {files[0]}", 1)]
        errors = rng.randint(calls // 2, calls * 9 // 10)
        repeats = rng.randint(5, 15)
        info = [round(rng.uniform(0.0, 0.1), 2) for _ in range(6)]
    else:  # wandering: reads everything, changes nothing, learns nothing new
        commands = [cmd(c, 0) for c in ("ls -R", "cat README.md", "git log", "ls", "cat setup.py",
                                        "find . -name '*.py'")]
        repeats = rng.randint(3, 6)
        info = [round(rng.uniform(0.0, 0.06), 2) for _ in range(6)]
    if hard:  # busy-looking: edits one file back and forth, its test flips but never settles,
        # each step still turns up a little new output, and most spend goes on retries
        changed = files[:1]
        commands = [*commands[:2], cmd(test, 1), cmd(test, 0), cmd(test, 1), cmd(test, 0),
                    cmd(test, 1), cmd(test, 1)]
        repeats = rng.randint(3, 4)
        errors = rng.randint(calls // 10, calls // 3)
        info = [0.3, 0.2, round(rng.uniform(0.15, 0.2), 2), round(rng.uniform(0.1, 0.16), 2),
                round(rng.uniform(0.1, 0.15), 2), round(rng.uniform(0.1, 0.14), 2)]
    return {"steps": steps, "elapsed_s": steps * rng.uniform(8, 30), "files_changed": changed,
            "commands": commands, "tool_calls": calls, "tool_errors": errors,
            "repeated_identical_calls": repeats, "new_info_per_step": info}


def shipped_cases() -> list[dict[str, Any]]:
    """The 48 labelled cases as shipped in the package (a wheel has them too)."""
    text = (files("whalebone.training") / "assets" / "budget_cases.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def main() -> None:
    rng = random.Random(7)
    cases = []
    plans = ([("productive", p) for p in ("converging", "steady", "explore_then_build",
                                          "nearly_done")] * 6
             + [("doomed", p) for p in ("loop", "failing_unchanged", "tool_errors",
                                        "wandering")] * 6)
    for i, (label, pattern) in enumerate(plans):
        task = TASKS[rng.randrange(len(TASKS))]
        hard = i % 4 == 3 or (i // 4) % 6 == 5
        make = productive if label == "productive" else doomed
        facts = {"task": task[0], "task_kind": task[1], **make(rng, pattern, task, hard)}
        facts["elapsed_s"] = round(facts["elapsed_s"], 1)
        limit = rng.choice([0.5, 1.0, 2.0])
        spent = round(limit * rng.uniform(0.97, 0.999), 6)
        turn_share = rng.uniform(0.3, 0.5) if hard and label == "doomed" else rng.uniform(0.7, 0.9)
        turn_spend = round(spent * turn_share, 6)
        facts["spend_by_kind"] = {"turn": turn_spend, "retry": round(spent - turn_spend, 6)}
        cases.append({
            "id": f"{label[:4]}-{pattern}-{i:02d}", "label": label, "pattern": pattern,
            "hard": hard, "scope": f"run:case{i:02d}", "unit": "usd", "limit": limit,
            "spent": spent, "needed": round(rng.uniform(0.01, 0.05), 4),
            "max_step": limit / 2, "facts": facts, "base_rates": base_rates(rng, task[1]),
            "narrative": rng.choice(OPTIMISTIC),
        })
    OUT.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases),
                   encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
