"""whalebone-nano on its held-out tasks, end to end: real agent loop, real tools, bundled engine.

    python bench/nano_eval.py                              # the shipped checkpoint, 30 per family
    python bench/nano_eval.py --checkpoint DIR --per-family 50 --json out.json
    python bench/nano_eval.py --families arithmetic,chat --per-family 5
    python bench/nano_eval.py --families echo   # the training-only copying family

The held-out split is seed 0 of :mod:`whalebone.training.tasks` (never trained on: training
uses seeds >= 1 and drops any task whose user message is held out) and, for the auditor, the
labelled cases of ``whalebone/training/assets/budget_cases.jsonl``. Each agent task runs through
:class:`whalebone.agent.Agent` with the tools the nano agent uses (built-ins + calculator, plus a
real memory scope for the memory family, whose two sessions share it); each auditor case goes
through :class:`whalebone.budget.auditor.Auditor`. Per family it prints:

- well-formed: share of model turns whose output parsed as DSML (the loop's malformed-output
  warnings; for the auditor, answers not refused as unparseable);
- right call: every tool call of the conversation is the expected tool with the expected
  arguments (a calculator expression counts when it has the same value);
- correct: the final answer holds what the task asks for (the result, the quoted lines, the
  listed names, the recalled fact, the canned reply with no tool call), written files hold
  the asked content; for the auditor: the decision agrees with the policy;
- for the auditor also agreement with the cases' productive/doomed labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from whalebone.training.tasks import FAMILIES, TRAIN_FAMILIES, Task, make_tasks


def same_call(got: tuple[str, dict[str, Any]], want: tuple[str, dict[str, Any]]) -> bool:
    if got[0] != want[0]:
        return False
    if want[0] == "calculator":
        from whalebone.tools.calculator import evaluate

        try:
            return set(got[1]) == {"expression"} and (
                evaluate(str(got[1]["expression"])) == evaluate(want[1]["expression"]))
        except Exception:
            return False
    return got[1] == want[1]


async def run_agent_task(engine: Any, task: Task, scratch: Path) -> dict[str, Any]:
    from whalebone.agent.agent import Agent
    from whalebone.agent.config import AgentConfig
    from whalebone.agent.events import Done, RunWarning, ToolCalled, UsageReport
    from whalebone.agent.store import SessionStore
    from whalebone.training.data import nano_tools, write_workspace

    ws = Path(tempfile.mkdtemp(dir=scratch))
    write_workspace(ws, task.files)
    home = None
    if task.family == "memory":
        from whalebone.memory import MemoryHome

        home = MemoryHome(ws / ".home")
    turns = malformed = 0
    calls: list[tuple[str, dict[str, Any]]] = []
    answer, reason = "", ""
    for user in task.sessions:
        agent = Agent(engine, tools=nano_tools(ws), store=SessionStore(":memory:"),
                      config=AgentConfig(max_steps=4, max_tokens=200),
                      memory=None if home is None else home.attach("project:eval"))
        async for event in agent.stream(user):
            if isinstance(event, UsageReport) and event.kind in ("turn", "retry"):
                turns += 1
            elif isinstance(event, RunWarning) and event.kind == "malformed_output":
                malformed += 1
            elif isinstance(event, ToolCalled):
                calls.append((event.name, dict(event.arguments)))
            elif isinstance(event, Done):
                answer, reason = event.answer, event.reason
    want = task.expected_calls
    right = len(calls) == len(want) and all(map(same_call, calls, want))
    correct = reason == "answer" and all(s in answer for s in task.expect_answer)
    for rel, content in task.expect_files.items():
        path = ws / rel
        correct = correct and path.is_file() and path.read_text(encoding="utf-8") == content
    if task.family in ("chat", "echo"):
        correct = correct and not calls
    return {"turns": turns, "malformed": malformed, "right_call": right, "correct": correct,
            "answer": answer, "calls": calls, "reason": reason}


async def run_audit_task(engine: Any, task: Task) -> dict[str, Any]:
    from whalebone.budget.auditor import Auditor
    from whalebone.training.audit import request_of

    assert task.case is not None
    request = request_of(task.case)
    verdict, _ = await Auditor(engine).decide(request, timeout_s=300, max_tokens=256)
    want = task.steps[0][0].calls[0][1]
    amount_ok = (verdict.amount == request.max_step if want["decision"] == "approve"
                 else verdict.amount == 0)
    return {"turns": 1, "malformed": int(verdict.cause == "unparseable"),
            "right_call": verdict.cause == "ok" and verdict.decision == want["decision"]
            and amount_ok,
            "correct": verdict.decision == want["decision"],
            "label_agrees": verdict.decision == ("approve" if task.case["label"] == "productive"
                                                 else "deny"),
            "answer": verdict.decision, "cause": verdict.cause}


def summarise(family: str, results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    n = len(results)
    turns = sum(r["turns"] for r in results)
    out = {"family": family, "tasks": n,
           "well_formed": 1 - sum(r["malformed"] for r in results) / max(1, turns),
           "right_call": sum(r["right_call"] for r in results) / n,
           "correct": sum(r["correct"] for r in results) / n,
           "seconds_per_task": seconds / n}
    if family == "auditor":
        out["label_agreement"] = sum(r["label_agrees"] for r in results) / n
    return out


async def evaluate(checkpoint: Path | None, families: list[str], per_family: int,
                   verbose: bool, auditor_cases: int) -> list[dict[str, Any]]:
    from whalebone.engine.runtime.bundled import CHECKPOINT_DIR, BundledEngine

    summaries = []
    with tempfile.TemporaryDirectory(prefix="nano-eval-") as tmp:
        engine = BundledEngine.from_checkpoint(checkpoint or CHECKPOINT_DIR,
                                               cache_dir=Path(tmp) / "cache", progress=False)
        try:
            for family in families:
                tasks = make_tasks(family, auditor_cases if family == "auditor" else per_family,
                                   0)
                start = time.perf_counter()
                results = []
                for task in tasks:
                    r = (await run_audit_task(engine, task) if family == "auditor"
                         else await run_agent_task(engine, task, Path(tmp)))
                    results.append(r)
                    if verbose and not r["correct"]:
                        print(f"  miss {family}: {task.sessions or task.case['id']!r} -> "
                              f"{r['answer']!r} {r.get('calls', '')}", file=sys.stderr)
                s = summarise(family, results, time.perf_counter() - start)
                print(f"{family:11s} n={s['tasks']:3d}  well-formed {s['well_formed']:6.1%}  "
                      f"right call {s['right_call']:6.1%}  correct {s['correct']:6.1%}"
                      + (f"  label agreement {s['label_agreement']:6.1%}"
                         if "label_agreement" in s else "")
                      + f"  ({s['seconds_per_task']:.1f} s/task)", flush=True)
                summaries.append(s)
        finally:
            await engine.aclose()
    return summaries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the shipped one)")
    p.add_argument("--per-family", type=int, default=30)
    p.add_argument("--auditor-cases", type=int, default=48,
                   help="held-out budget cases (48 shipped; productive and doomed alternate)")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--json", type=Path, help="write the summaries here")
    p.add_argument("--verbose", action="store_true", help="print every miss")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a shared CPU: see whalebone.training.train
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(TRAIN_FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; choose from {', '.join(TRAIN_FAMILIES)}")
    summaries = anyio.run(evaluate, args.checkpoint, families, args.per_family, args.verbose,
                          args.auditor_cases)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
