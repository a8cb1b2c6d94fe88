"""A fixed rule for budget extensions: the baseline the auditor is measured against, and the
policy the bundled auditor model is trained on.

It reads only a run's objective facts: deny on a loop, on no new information lately, on mostly
failing tools, or on the same failing commands with nothing changed; otherwise approve. Callers
word the verdict their own way (the evaluation bench tersely, the training oracle as reasoning),
so the checks live here once and return which one tripped.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Literal

from whalebone.budget.policy import BaseRates, ExtensionRequest, RunFacts

Check = Literal["loop", "no_new_information", "tool_errors", "failing_unchanged"]


@dataclass(frozen=True)
class RuleReading:
    """What the rule read from the facts, and the first check that tripped (None: approve)."""

    recent_info: list[float]  # new information per step, last three steps
    stuck: bool  # the last commands all failed and no file changed
    tripped: Check | None

    @property
    def mean_info(self) -> float:
        return statistics.mean(self.recent_info) if self.recent_info else 1.0

    @property
    def decision(self) -> Literal["approve", "deny"]:
        return "approve" if self.tripped is None else "deny"


def read(facts: RunFacts) -> RuleReading:
    recent = list(facts.new_info_per_step[-3:])
    last = [c.exit_status for c in facts.commands[-5:]]
    stuck = bool(last) and all(s not in (0, None) for s in last) and not facts.files_changed
    tripped: Check | None = None
    if facts.repeated_identical_calls >= 5:
        tripped = "loop"
    elif recent and statistics.mean(recent) < 0.1:
        tripped = "no_new_information"
    elif facts.tool_error_rate > 0.5:
        tripped = "tool_errors"
    elif stuck:
        tripped = "failing_unchanged"
    return RuleReading(recent_info=recent, stuck=stuck, tripped=tripped)


def request_from_case(case: dict[str, Any]) -> ExtensionRequest:
    """The extension request of a labelled case (``training/assets/budget_cases.jsonl``)."""
    return ExtensionRequest(
        request_id=case["id"], session_id="bench", run_id=case["id"], agent="coder",
        kind="turn", scope=case["scope"], unit=case["unit"], limit=case["limit"],
        spent=case["spent"], in_flight=0.0, needed=case["needed"], max_step=case["max_step"],
        extensions_so_far=0, facts=RunFacts.model_validate(case["facts"]),
        base_rates=BaseRates.model_validate(case["base_rates"]))
