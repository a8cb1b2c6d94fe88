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

from whalebone.budget.policy import (
    AuditAnswers,
    BaseRate,
    BaseRates,
    ExtensionRequest,
    Progress,
    RunFacts,
    Verdict,
)

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


def progress(facts: RunFacts, reading: RuleReading) -> Progress:
    """Progress over the last steps: none when they brought (almost) nothing new."""
    if reading.recent_info and reading.mean_info < 0.1:
        return "none"
    return "clear" if facts.files_changed and reading.mean_info >= 0.5 else "some"


def base_rate(rates: BaseRates) -> BaseRate:
    rate = rates.extended_finish_rate
    if rate is None:
        return "unknown"
    return "low" if rate < 1 / 3 else "high" if rate >= 2 / 3 else "medium"


def share_used(request: ExtensionRequest) -> float:
    return (request.spent + request.in_flight) / request.limit if request.limit > 0 else 1.0


def answers(request: ExtensionRequest) -> AuditAnswers:
    """The fixed questions answered from the facts alone: what the rule reads, in the shape a
    model auditor must answer (and the training oracle teaches)."""
    facts = request.facts
    reading = read(facts)
    return AuditAnswers(
        progress_since_last_extension=progress(facts, reading),
        repeated_failures=reading.stuck or facts.tool_error_rate > 0.5,
        loop_signals=facts.repeated_identical_calls >= 5,
        share_of_budget_used=round(share_used(request), 2),
        base_rate_of_similar_runs=base_rate(request.base_rates))


def contradiction(given: AuditAnswers, request: ExtensionRequest) -> str | None:
    """Where an answer says the opposite of what the facts measure (None: nowhere). Erring
    towards caution is no contradiction: seeing a loop where the rule sees none is allowed."""
    truth = answers(request)
    if truth.loop_signals and not given.loop_signals:
        return (f"answered no loop signals, but one call repeated "
                f"{request.facts.repeated_identical_calls} times")
    if truth.repeated_failures and not given.repeated_failures:
        return "answered no repeated failures, but the failures repeat"
    if truth.progress_since_last_extension == "none" and \
            given.progress_since_last_extension != "none":
        return "answered that there was progress, but the last steps brought nothing new"
    optimistic = {"low": ("medium", "high"), "medium": ("high",)}
    if given.base_rate_of_similar_runs in optimistic.get(truth.base_rate_of_similar_runs, ()):
        return (f"answered base rate {given.base_rate_of_similar_runs}, the records say "
                f"{truth.base_rate_of_similar_runs}")
    return None


class RuleDecider:
    """The rule as a decider at a cap (``auditor = "rule"``): no model, no spend. Approves
    half the maximum step, so a run that stays productive comes back to it before long."""

    name = "rule"
    engine = None

    async def decide(self, request: ExtensionRequest, *, timeout_s: float = 0.0,
                     max_tokens: int = 0) -> tuple[Verdict, None]:
        given = answers(request)
        reading = read(request.facts)
        if reading.tripped is not None:
            return Verdict(decision="deny", reason=f"the rule's check {reading.tripped} "
                           "tripped", decider=self.name, answers=given), None
        return Verdict(decision="approve", amount=request.max_step / 2, reason="progress",
                       decider=self.name, answers=given), None


def request_from_case(case: dict[str, Any]) -> ExtensionRequest:
    """The extension request of a labelled case (``training/assets/budget_cases.jsonl``)."""
    return ExtensionRequest(
        request_id=case["id"], session_id="bench", run_id=case["id"], agent="coder",
        kind="turn", scope=case["scope"], unit=case["unit"], limit=case["limit"],
        spent=case["spent"], in_flight=0.0, needed=case["needed"], max_step=case["max_step"],
        extensions_so_far=0, facts=RunFacts.model_validate(case["facts"]),
        base_rates=BaseRates.model_validate(case["base_rates"]))
