"""The live mode of ``bench/budget_eval.py``: deciders at real caps, through the real loop.

    python bench/budget_eval.py --live                  # rule, self-approval, bundled auditor
    python bench/budget_eval.py --live --engine deepseek:deepseek-v4-flash   # + a real model

Twenty scripted sessions (``ScriptedEngine`` priced as V4-Flash, so dollars are real figures),
ten productive and ten doomed, each run by the real agent loop with the budget guard that every
front end gets (:func:`whalebone.budget.setup.open_guard`), a session cap a few steps deep and
the decider under test at the cap. A productive session writes a new file each step and its
tests pass after its last one; it needs extensions to finish. A doomed one never finishes: it
repeats one call (a loop), reruns a failing command with nothing changed, reads files that
bring nothing new, or calls a tool that always fails. The loop's own doom-loop detector is off
(``loop_limit`` very high), so the budget is what stops a run.

For each decider: doomed runs stopped at a cap, productive runs extended and finished, dollars
spent, and the dollars saved against blind self-approval (a worker that approves itself the
maximum step every time, the study's baseline).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whalebone.agent import Agent, AgentConfig
from whalebone.agent.events import Done
from whalebone.budget.auditor import Auditor
from whalebone.budget.policy import ExtensionRequest, Verdict
from whalebone.budget.rule import RuleDecider
from whalebone.budget.setup import open_guard
from whalebone.dsml import emit_completion
from whalebone.engine.base import Engine, GenerationRequest
from whalebone.engine.scripted import ScriptedEngine
from whalebone.tools.registry import ToolError, ToolRegistry

MODEL = "deepseek-v4-flash"
PATTERNS = {"productive": ("steady", "converging"),
            "doomed": ("loop", "failing_unchanged", "wandering", "tool_errors")}
POLICY = {"session_usd": 0.0005, "max_step_usd": 0.0004, "max_extensions_per_run": 8,
          "poll_s": 0.01}


class SelfApproval(RuleDecider):
    """Blind self-approval: the maximum step, every time."""

    name = "self"

    async def decide(self, request: ExtensionRequest, *, timeout_s: float = 0.0,
                     max_tokens: int = 0) -> tuple[Verdict, None]:
        return Verdict(decision="approve", amount=request.max_step, reason="I am close",
                       decider=self.name), None


def tools(root: Path) -> ToolRegistry:
    """A workspace whose tools answer deterministically: files, a test command, a flaky API."""
    reg = ToolRegistry()

    @reg.tool
    def write_file(path: str, content: str) -> str:
        """Write a file in the workspace."""
        (root / Path(path).name).write_text(content, encoding="utf-8")
        return f"wrote {len(content)} characters to {path}"

    @reg.tool(idempotent=True)
    def read_file(path: str) -> str:
        """Read a file of the workspace."""
        target = root / Path(path).name
        return target.read_text(encoding="utf-8") if target.exists() else "(empty)"

    @reg.tool
    def shell(command: str) -> str:
        """Run the project's test command."""
        done = len(list(root.glob("part_*.py")))
        passing = "pytest" in command and done >= 4
        return f"exit code {0 if passing else 1}\n{done} parts, " + (
            "all tests pass" if passing else "1 failed: test_feature")

    @reg.tool
    def fetch_api(endpoint: str) -> str:
        """Call the service's API."""
        raise ToolError(f"503 from {endpoint}: service unavailable")

    return reg


def worker(pattern: str, steps_needed: int) -> Callable[[GenerationRequest], str]:
    """The scripted worker of one session: its next completion from its step count."""
    state = {"step": 0}

    def call(name: str, args: dict[str, Any], why: str) -> str:
        return emit_completion("", reasoning=why, tool_calls=[(name, args)])

    def next_completion(_: GenerationRequest) -> str:
        state["step"] += 1
        n = state["step"]
        if pattern in PATTERNS["productive"]:
            if n > steps_needed:
                return emit_completion("Done: the feature is in and the tests pass.",
                                       reasoning="Everything passes.")
            if n % 3 == 0 or (pattern == "converging" and n == steps_needed):
                return call("shell", {"command": f"pytest -q -k part{n}"}, "Check the tests.")
            return call("write_file", {"path": f"part_{n}.py",
                                       "content": f"def part_{n}():\n    return {n}\n" * 3},
                        f"Write part {n}.")
        if pattern == "loop":
            return call("read_file", {"path": "notes.txt"}, "Read the notes again.")
        if pattern == "failing_unchanged":
            return call("shell", {"command": f"pytest -q -x --lf -p no:{n % 4}"},
                        "Try the tests once more.")
        if pattern == "wandering":
            return call("read_file", {"path": f"maybe_{n}.txt"}, "Look somewhere else.")
        return call("fetch_api", {"endpoint": f"/v1/items?page={n}"}, "Call the API again.")

    return next_completion


def sessions() -> list[tuple[str, str, int]]:
    """(label, pattern, steps a productive run needs): ten productive, ten doomed."""
    out = [("productive", PATTERNS["productive"][i % 2], 10 + i) for i in range(10)]
    out += [("doomed", PATTERNS["doomed"][i % 4], 0) for i in range(10)]
    return out


async def run_one(label: str, pattern: str, need: int, auditor: Any, home: Path,
                  index: int) -> dict[str, Any]:
    ws = home / f"ws{index}"
    ws.mkdir()
    engine = ScriptedEngine(worker(pattern, need), model=MODEL, delta_chars=4096)
    options: dict[str, Any] = {**POLICY, "ledger": str(home / "budget.db"), "auditor": "none"}
    guard = open_guard(engine, options)
    guard.auditor = auditor
    if auditor is not None:
        guard.policy = guard.policy.model_copy(update={"on_cap": "auditor"})
    agent = Agent(engine, tools=tools(ws), store=home / "sessions.db", budget=guard,
                  config=AgentConfig(name=f"bench{index}", max_steps=60, loop_limit=1000,
                                     date_in_task=False, max_tokens=128))
    done: Done | None = None
    async for event in agent.stream(f"Build the feature ({pattern}).", thinking="thinking"):
        if isinstance(event, Done):
            done = event
    assert done is not None
    decisions = guard.book.decisions(where="session_id = ?", args=(done.session_id,))
    return {"label": label, "pattern": pattern, "reason": done.reason,
            "spent": guard.ledger.state(f"session:{done.session_id}").spent_usd,
            "extensions": sum(d.decision == "approve" and d.applied for d in decisions),
            "decisions": len(decisions), "steps": done.steps,
            "causes": [d.cause for d in decisions if d.decision == "deny"]}


async def evaluate(name: str, auditor: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [await run_one(label, pattern, need, auditor, Path(tmp), i)
                for i, (label, pattern, need) in enumerate(sessions())]
    doomed = [r for r in rows if r["label"] == "doomed"]
    productive = [r for r in rows if r["label"] == "productive"]
    return {
        "decider": name, "rows": rows, "seconds": time.perf_counter() - t0,
        "doomed_stopped": sum(r["reason"] == "budget" for r in doomed),
        "productive_extended": sum(r["extensions"] > 0 and r["reason"] == "answer"
                                   for r in productive),
        "productive_finished": sum(r["reason"] == "answer" for r in productive),
        "spent": sum(r["spent"] for r in rows),
        "spent_doomed": sum(r["spent"] for r in doomed),
        "deny_causes": dict(Counter(c for r in rows for c in r["causes"])),
    }


def auditor_of(engine: Engine) -> Auditor:
    return Auditor(engine)


async def live(engine_specs: list[str | None], open_model: Callable[[str | None],
               tuple[Engine | None, str]], json_path: Path | None) -> int:
    results = [await evaluate("self-approval (blind)", SelfApproval()),
               await evaluate("none (deny at the cap)", None),
               await evaluate("rule", RuleDecider())]
    for spec in engine_specs:
        engine, name = open_model(spec)
        if engine is None:
            print(f"auditor {name}: not run")
            continue
        results.append(await evaluate(f"auditor ({name})", auditor_of(engine)))
    baseline = results[0]["spent"]
    n = len(sessions())
    print(f"{n} scripted sessions (10 productive, 10 doomed) through the real loop, priced as "
          f"{MODEL}; session cap ${POLICY['session_usd']}, step ${POLICY['max_step_usd']}, "
          f"at most {POLICY['max_extensions_per_run']} extensions")
    print(f"{'decider':<34} {'doomed stopped':>15} {'productive ext+done':>20} "
          f"{'spent $':>10} {'saved vs self $':>16} {'s':>7}")
    for r in results:
        print(f"{r['decider']:<34} {r['doomed_stopped']:>12}/10 {r['productive_extended']:>17}/10"
              f" {r['spent']:>10.4f} {baseline - r['spent']:>16.4f} {r['seconds']:>7.1f}"
              f"  denies: {r['deny_causes'] or '-'}")
    if json_path:
        json_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0
