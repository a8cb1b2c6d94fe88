"""What the budget guard is told and what it tells: the policy, a call's plan, the run's facts.

These are plain data so that the agent loop, the auditor, the ledger's decision log, the CLI and
the evaluation bench all speak the same shapes. :class:`RunFacts` is deliberately narrow: it holds
only what can be measured from the workspace and the ledger (the study behind the guard found that
a worker's own account of its progress, or anyone's recommendation, makes an auditor approve
nearly everything), so there is no field in which narrative could travel.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from whalebone.core.strict import StrictModel

OnCap = Literal["auditor", "human", "deny"]
Unit = Literal["usd", "tokens"]
Decision = Literal["approve", "deny"]

# Metered kinds of model call. Any other short identifier is accepted (and metered) too: the
# list documents what the runtime itself emits.
KNOWN_KINDS = ("turn", "retry", "compaction", "auditor", "subagent", "heartbeat", "summary")
KIND_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class BudgetPolicy(StrictModel):
    """Limits for the scopes every call is charged to, and what happens at a cap.

    A limit of ``None`` leaves that scope metered but uncapped. A limit set in the ledger (by
    ``whalebone budget set`` or by an approved extension) wins over the policy's default, which
    only applies the first time a scope is seen.

    Unknown keys are refused: a misspelt limit (``sesion_usd``) silently ignored would be a
    limit silently missing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    what: ClassVar[str] = "the budget policy"

    run_usd: float | None = Field(None, ge=0)
    run_tokens: int | None = Field(None, ge=0)
    session_usd: float | None = Field(None, ge=0)
    session_tokens: int | None = Field(None, ge=0)
    agent_day_usd: float | None = Field(None, ge=0)
    agent_day_tokens: int | None = Field(None, ge=0)
    global_day_usd: float | None = Field(None, ge=0)
    global_day_tokens: int | None = Field(None, ge=0)
    extra_scopes: tuple[str, ...] = ()  # e.g. ("project:whalebone",): charged on every call

    on_cap: OnCap = "auditor"
    max_step_usd: float = Field(1.0, ge=0)  # the most one extension may add
    max_step_tokens: int = Field(200_000, ge=0)
    max_extensions_per_run: int = Field(3, ge=0)
    auditor_timeout_s: float = Field(120.0, gt=0)
    auditor_max_tokens: int = Field(2048, ge=64)
    auditor_day_usd: float | None = Field(1.0, ge=0)  # the auditor's own daily cap
    human_wait_s: float | None = Field(None, gt=0)  # None: a frozen run waits for a person
    poll_s: float = Field(0.1, gt=0)  # how often a frozen guard looks for a person's decision
    peak: bool = False  # price calls at the table's peak multiplier


@dataclass(frozen=True)
class CallPlan:
    """One model call the loop is about to make, as the guard needs to bound it."""

    run_id: str
    session_id: str
    agent: str
    kind: Annotated[str, Field(pattern=KIND_PATTERN)]
    model: str
    prompt_tokens: Annotated[int, Field(ge=0)]
    cached_tokens: Annotated[int, Field(ge=0)]  # of prompt_tokens, expected to hit the cache
    max_tokens: Annotated[int, Field(ge=1)]

    def __post_init__(self) -> None:
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(f"cached_tokens {self.cached_tokens} > prompt_tokens "
                             f"{self.prompt_tokens}")


class CommandRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str
    exit_status: int | None = None  # None: still running or killed


class RunFacts(BaseModel):
    """Objective facts about a run, gathered by the runtime (never written by the worker).

    ``spend_by_kind`` is filled in by the guard from the ledger, whatever the caller passes.
    Unknown fields are refused, so no narrative can ride along under another name.
    """

    model_config = ConfigDict(extra="forbid")

    task: str = ""  # the task as the user gave it
    task_kind: str = ""  # groups runs for base rates; the agent's name when empty
    steps: int = Field(0, ge=0)
    elapsed_s: float = Field(0.0, ge=0)
    spend_by_kind: dict[str, float] = Field(default_factory=dict)  # USD this run, by kind
    files_changed: list[str] = Field(default_factory=list)
    commands: list[CommandRun] = Field(default_factory=list)  # most recent last
    tool_calls: int = Field(0, ge=0)
    tool_errors: int = Field(0, ge=0)
    repeated_identical_calls: int = Field(0, ge=0)  # the most times one exact call repeated
    new_info_per_step: list[float] = Field(default_factory=list)  # 0..1, most recent last

    @property
    def tool_error_rate(self) -> float:
        return self.tool_errors / self.tool_calls if self.tool_calls else 0.0


class BaseRates(BaseModel):
    """How runs of this kind went, from the ledger's recorded outcomes."""

    task_kind: str
    runs: int = 0
    finished: int = 0
    extended_runs: int = 0
    extended_finished: int = 0  # of the extended runs, how many went on to finish

    @property
    def extended_finish_rate(self) -> float | None:
        return self.extended_finished / self.extended_runs if self.extended_runs else None

    @property
    def finish_rate(self) -> float | None:
        return self.finished / self.runs if self.runs else None


class ExtensionRequest(BaseModel):
    """What a decider sees at a cap: the blocked scope, the facts, the base rates. Nothing else."""

    request_id: str
    session_id: str
    run_id: str
    agent: str
    kind: str  # the kind of call that was blocked
    scope: str
    unit: Unit
    limit: float
    spent: float
    in_flight: float
    needed: float  # this call's worst case
    max_step: float  # the most an approval may add, in ``unit``
    extensions_so_far: int
    facts: RunFacts
    base_rates: BaseRates


Progress = Literal["none", "some", "clear"]
BaseRate = Literal["low", "medium", "high", "unknown"]


class AuditAnswers(BaseModel):
    """The fixed questions a decider answers about the facts before it decides.

    Asked as structured fields rather than left to a free-form plea: the decision must then
    follow from the answers (:func:`inconsistency`) and the answers from the measured facts
    (``whalebone.budget.rule.contradiction``); either failing turns an approval into a deny.
    """

    model_config = ConfigDict(extra="forbid")

    progress_since_last_extension: Progress  # new information, files changed, lately
    repeated_failures: bool  # the same commands failing, or most tool calls failing
    loop_signals: bool  # one identical call repeated over and over
    share_of_budget_used: float = Field(ge=0)  # (spent + in flight) / limit, blocked scope
    base_rate_of_similar_runs: BaseRate  # how often extended runs of this kind finished


def inconsistency(answers: AuditAnswers, decision: Decision) -> str | None:
    """Why ``decision`` does not follow from ``answers`` (None: it does). A deny always
    follows: denying is the safe default, whatever the answers."""
    if decision == "deny":
        return None
    if answers.progress_since_last_extension == "none":
        return "approved although it answered that there was no progress"
    if answers.loop_signals:
        return "approved although it answered that the run shows loop signals"
    if answers.repeated_failures:
        return "approved although it answered that failures repeat"
    return None


class Verdict(BaseModel):
    """A decider's answer. ``cause`` says why a deny was forced ("ok" for a real decision)."""

    decision: Decision
    amount: float = 0.0
    reason: str = ""
    # Why a deny was forced: "ok" for a decider's own decision; from the auditor timeout,
    # engine_error, unparseable, no_amount, over_max (amount above the step), inconsistent
    # (an approval its own answers rule out), contradicts_facts (answers the facts refute),
    # auditor_error, no_budget_for_auditor; from the guard no_auditor, policy_deny, max_extensions,
    # shortfall_over_max, facts_error, cancelled, and timeout when no person decided in time.
    cause: str = "ok"
    decider: str = "policy"  # "auditor:<engine>/<model>", "human", "policy"
    cost_usd: float = 0.0
    tokens: int = 0
    raw: str = ""  # the auditor's completion, kept for the log
    answers: AuditAnswers | None = None  # a structured decider's answers, logged with it
