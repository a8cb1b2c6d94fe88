"""The auditor family: budget extension requests and the decision a sound policy makes.

The policy is the fixed rule of ``whalebone.budget.rule`` (deny on a loop, on no new information
lately, on mostly failing tools, or on the same failing commands with nothing changed; otherwise
approve). The oracle's reasoning walks through those four checks with the numbers read from the
request, so the model learns to look at the facts that decide, then calls ``decide_budget``.
Approvals ask for the maximum step shown in the request.

Training requests come from the case generator :mod:`whalebone.training.budget_cases` run with
other seeds; the held-out requests are the labelled cases it shipped (package data), never trained
on.
"""

from __future__ import annotations

import random
from typing import Any

from whalebone.budget.auditor import call_arguments
from whalebone.budget.policy import RunFacts
from whalebone.budget.rule import answers as rule_answers
from whalebone.budget.rule import read as read_rule
from whalebone.budget.rule import request_from_case
from whalebone.training import budget_cases as mk
from whalebone.training.tasks import Step, Task


def policy(facts: RunFacts) -> tuple[str, str, str]:
    """The rule's decision, the checks that lead to it and the one-sentence reason."""
    reading = read_rule(facts)
    recent = reading.recent_info
    checks = (f"identical calls {facts.repeated_identical_calls}; new information lately "
              f"{' '.join(f'{x:.2f}' for x in recent) or 'none'}; error rate "
              f"{facts.tool_error_rate:.0%}; failing with nothing changed: "
              f"{'yes' if reading.stuck else 'no'}.")
    why = {
        None: "Progress is steady.",
        "loop": f"The run repeated one identical call {facts.repeated_identical_calls} times: "
                "it is looping.",
        "no_new_information": "The last steps brought almost no new information "
                              f"({reading.mean_info:.2f} on average).",
        "tool_errors": f"Most tool calls fail (error rate {facts.tool_error_rate:.0%}).",
        "failing_unchanged": "The same commands keep failing and no file has changed.",
    }[reading.tripped]
    return reading.decision, checks, why


request_of = request_from_case  # (one conversion, in the budget room)


def task_of(case: dict[str, Any]) -> Task:
    request = request_of(case)
    decision, checks, reason = policy(request.facts)
    amount = request.max_step if decision == "approve" else 0
    call = ("decide_budget", call_arguments(rule_answers(request), decision, amount, reason))
    step = Step(f"{checks} {decision.capitalize()}.", [call])
    return Task("auditor", [], [[step]], expect_answer=[decision], case=case)


def generated_cases(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` cases from the bench's generator, drawn with ``seed`` (not the shipped seed 7)."""
    rng = random.Random(f"auditor:{seed}")
    patterns = ([("productive", p) for p in ("converging", "steady", "explore_then_build",
                                             "nearly_done")]
                + [("doomed", p) for p in ("loop", "failing_unchanged", "tool_errors",
                                           "wandering")])
    cases = []
    for i in range(n):
        label, pattern = rng.choice(patterns)
        task = mk.TASKS[rng.randrange(len(mk.TASKS))]
        hard = rng.random() < 0.35
        make = mk.productive if label == "productive" else mk.doomed
        facts = {"task": task[0], "task_kind": task[1], **make(rng, pattern, task, hard)}
        facts["elapsed_s"] = round(facts["elapsed_s"], 1)
        limit = rng.choice([0.5, 1.0, 2.0, 5.0, 0.25])
        spent = round(limit * rng.uniform(0.97, 0.999), 6)
        turn = round(spent * rng.uniform(0.3, 0.9), 6)
        facts["spend_by_kind"] = {"turn": turn, "retry": round(spent - turn, 6)}
        cases.append({"id": f"gen-{seed}-{i}", "label": label, "pattern": pattern, "hard": hard,
                      "scope": f"run:gen{i}", "unit": "usd", "limit": limit, "spent": spent,
                      "needed": round(rng.uniform(0.01, 0.05), 4), "max_step": limit / 2,
                      "facts": facts, "base_rates": mk.base_rates(rng, task[1])})
    return cases


def held_out_cases() -> list[dict[str, Any]]:
    return mk.shipped_cases()


def audit_tasks(n: int, seed: int) -> list[Task]:
    """Seed 0 is the held-out split (the shipped cases, ``n`` at most, productive and doomed
    alternating so that any ``n`` is balanced); other seeds are generated."""
    if seed == 0:
        shipped = held_out_cases()
        good = [c for c in shipped if c["label"] == "productive"]
        bad = [c for c in shipped if c["label"] != "productive"]
        mixed = [c for pair in zip(good, bad, strict=False) for c in pair]
        cases = (mixed + good[len(bad):] + bad[len(good):])[:n]
    else:
        cases = generated_cases(n, seed)
    return [task_of(c) for c in cases]
