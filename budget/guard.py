"""The budget guard: every model call is bounded and reserved before it is made.

The agent loop asks :meth:`BudgetGuard.before_call` before each call (turns, retries,
compaction summaries, subagents, heartbeats: every ``kind``), makes the call only once it has a
:class:`Ticket`, and then settles the ticket with the call's usage or releases it. The worst case
(every prompt token at the cache-miss price, ``max_tokens`` + EOS at the output price: a cache
is best effort, and a call that misses it must still fit) is reserved atomically in the ledger
in every scope the call is charged to: the run, the session, the agent today, everyone today and
any extra scopes of the policy.

When a reservation would pass a limit the worker is frozen: ``before_call`` does not return, so
the worker makes no call. The runtime builds an extension request from objective facts only
(``facts()``, the ledger's spend by kind and base rates), stores it, and has it decided by the
policy's ``on_cap``: the auditor (a separate engine, see :mod:`whalebone.budget.auditor`), a
person (``whalebone budget approve|deny``), or a flat deny. A person may decide while the auditor
thinks; the first decision wins. An approval raises the blocked scope's limit and the
reservation is tried again; a deny raises :class:`BudgetStop`. The guard never reads or writes a
prompt, so nothing about the budget can reach the worker's cached prefix.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio

from whalebone.budget.auditor import Auditor
from whalebone.budget.ledger import Actual, Ledger, Limit, ReservationRefused, day_scope
from whalebone.budget.policy import (
    BaseRates,
    BudgetPolicy,
    CallPlan,
    CommandRun,
    ExtensionRequest,
    RunFacts,
    Verdict,
)
from whalebone.budget.records import DecisionBook
from whalebone.budget.rule import RuleDecider
from whalebone.core.errors import WhaleboneError
from whalebone.engine.base import Usage
from whalebone.engine.prices import PriceTable

__all__ = [
    "BaseRates",
    "BudgetGuard",
    "BudgetPolicy",
    "BudgetStop",
    "CallPlan",
    "CommandRun",
    "RunFacts",
    "Ticket",
]

log = logging.getLogger(__name__)

FactsSource = Callable[[], RunFacts | Awaitable[RunFacts]]


class BudgetStop(WhaleboneError):
    """A limit was reached and no extension was granted: the run must stop."""

    def __init__(self, message: str, *, scope: str, unit: str, limit: float, spent: float,
                 needed: float, request_id: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.scope = scope
        self.unit = unit
        self.limit = limit
        self.spent = spent
        self.needed = needed
        self.request_id = request_id
        self.verdict = verdict


class TicketError(WhaleboneError):
    """A ticket was settled or released twice."""


@dataclass
class Ticket:
    """Permission for one model call, holding its worst case in the ledger until settled."""

    reservation: str
    plan: CallPlan
    scopes: tuple[str, ...]
    worst_usd: float
    worst_tokens: int
    closed: bool = field(default=False, compare=False)


def _fmt(value: float, unit: str) -> str:
    return f"${value:.6f}" if unit == "usd" else f"{int(value)} tokens"


class BudgetGuard:
    """Hard limits checked before every model call, with audited extensions at a cap."""

    def __init__(self, ledger: Ledger | str | os.PathLike[str], *,
                 policy: BudgetPolicy | None = None, auditor: Auditor | RuleDecider | None = None,
                 prices: PriceTable | None = None) -> None:
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(Path(ledger))
        self.book = DecisionBook(self.ledger)
        self.policy = policy or BudgetPolicy()
        self.auditor = auditor
        self.prices = prices or PriceTable()
        self.notice: str | None = None  # a line for the person running, once (setup.py)
        # A new global-day scope's USD limit when nobody set one (setup.py: a priced engine).
        self.default_day_usd: float | None = None

    # --- bounding a call --------------------------------------------------------------------

    def scopes_for(self, plan: CallPlan) -> list[str]:
        return [f"run:{plan.run_id}", f"session:{plan.session_id}",
                day_scope(f"agent:{plan.agent}"), day_scope("global"),
                *self.policy.extra_scopes]

    def worst_case(self, plan: CallPlan, model: str | None = None) -> tuple[float, int]:
        """USD and tokens a call can cost at most (EOS counts as one more output token).
        ``plan.cached_tokens`` is an expectation, not a bound: an engine may report fewer hits
        (an eviction, another process's prompt in between), so every prompt token is
        reserved at the miss price and no settlement can pass a cap."""
        price = self.prices.lookup(model or plan.model)
        out = plan.max_tokens + 1
        usd = (plan.prompt_tokens * price.cache_miss + out * price.output) / 1e6
        if self.policy.peak:
            usd *= price.peak_multiplier
        return usd, plan.prompt_tokens + out

    def _ensure_limits(self, plan: CallPlan, scopes: list[str]) -> None:
        """Give each scope the strictest of the policy's limit (the config file) and the
        ledger's (``whalebone budget set``: a family default, or today's scope for ``global``
        and ``agent:NAME``). A scope whose limit was decided on purpose (an extension, or a
        person naming it exactly) keeps that limit."""
        p = self.policy
        families = [(("run",), p.run_usd, p.run_tokens),
                    (("session",), p.session_usd, p.session_tokens),
                    ((f"agent:{plan.agent}", "agent"), p.agent_day_usd, p.agent_day_tokens),
                    (("global",), p.global_day_usd, p.global_day_tokens)]
        for scope, (keys, usd, tokens) in zip(scopes, families, strict=False):
            current = self.ledger.limit(scope)
            if current is None:
                found = next((d for d in map(self.ledger.default, keys) if d is not None), None)
                if found is not None:
                    usd, tokens = _strictest(usd, found.max_usd), _strictest(tokens,
                                                                             found.max_tokens)
                if usd is None and keys == ("global",):
                    usd = self.default_day_usd
                self.ledger.ensure_limit(Limit(scope=scope, max_usd=usd, max_tokens=tokens))
                continue
            tight_usd = _strictest(usd, current.max_usd)
            tight_tokens = _strictest(tokens, current.max_tokens)
            if (tight_usd, tight_tokens) != (current.max_usd, current.max_tokens) \
                    and not self.book.overridden(scope):
                self.ledger.set_limit(Limit(scope=scope, max_usd=tight_usd,
                                            max_tokens=tight_tokens))

    async def before_call(self, plan: CallPlan, *, facts: FactsSource | None = None) -> Ticket:
        """Reserve the call's worst case, or freeze until a decider extends the blocked scope.

        Raises :class:`BudgetStop` when the extension is denied (by the auditor, a person, the
        policy, or by default on any failure of the auditor path).
        """
        usd, tokens = self.worst_case(plan)
        scopes = self.scopes_for(plan)
        self._ensure_limits(plan, scopes)
        waiting_on = None
        while True:
            try:
                rid = self.ledger.reserve(scopes, usd=usd, tokens=tokens)
            except ReservationRefused as cap:
                if self._fits_once_settled(cap, usd, tokens):
                    # Calls in flight hold their worst case; they usually settle for less, and
                    # this call fits beside what they have really spent: wait, don't ask.
                    if waiting_on != cap.scope:
                        waiting_on = cap.scope
                        log.warning("%s", self._waiting_line(plan, cap, usd, tokens))
                    await anyio.sleep(self.policy.poll_s)
                    continue
                await self._at_cap(plan, cap, facts, usd, tokens)
                continue  # extended: try again (another scope may still block)
            return Ticket(reservation=rid, plan=plan, scopes=tuple(scopes), worst_usd=usd,
                          worst_tokens=tokens)

    def _waiting_line(self, plan: CallPlan, cap: ReservationRefused, usd: float,
                      tokens: int) -> str:
        """What a waiting call waits for, in one line: the scope, its amount, the holders."""
        s = self.ledger.state(cap.scope)
        held = (_fmt(s.reserved_usd, "usd") if cap.unit == "usd"
                else _fmt(s.reserved_tokens, "tokens"))
        need = _fmt(usd, "usd") if cap.unit == "usd" else _fmt(tokens, "tokens")
        pids = ", ".join(str(pid) for pid, _ in self.ledger.holders(cap.scope)) or "none"
        return (f"budget: the {plan.kind} call (up to {need}) waits in {cap.scope} "
                f"(limit {_fmt(cap.limit, cap.unit)}) for {held} held by calls in flight "
                f"(pid {pids}) to settle")

    def _fits_once_settled(self, cap: ReservationRefused, usd: float, tokens: int) -> bool:
        s = self.ledger.state(cap.scope)
        if cap.unit == "usd":
            return s.reserved_usd > 0 and s.spent_usd + usd <= cap.limit + 1e-12
        return s.reserved_tokens > 0 and s.spent_tokens + tokens <= cap.limit

    def settle(self, ticket: Ticket, usage: Usage, *, model: str | None = None) -> Actual:
        """Charge what the call cost (priced for ``model``, the one that actually served it)."""
        if ticket.closed:
            raise TicketError(f"ticket {ticket.reservation} was already settled or released")
        actual = self.price(usage, model or ticket.plan.model, kind=ticket.plan.kind)
        self.ledger.settle(ticket.reservation, actual, scopes=ticket.scopes)
        ticket.closed = True
        if actual.usd > ticket.worst_usd + 1e-12 or actual.tokens > ticket.worst_tokens:
            # Only a wrong cache estimate or a miscounted prompt gets here; the spend is
            # charged in full, and the log says which call overran its bound.
            log.warning("call %s (%s) overran its reservation: $%.6f/%d tokens > $%.6f/%d",
                        ticket.reservation, ticket.plan.kind, actual.usd, actual.tokens,
                        ticket.worst_usd, ticket.worst_tokens)
        return actual

    def release(self, ticket: Ticket) -> None:
        """Give back the reservation of a call that was never made."""
        if ticket.closed:
            raise TicketError(f"ticket {ticket.reservation} was already settled or released")
        self.ledger.release(ticket.reservation)
        ticket.closed = True

    def price(self, usage: Usage, model: str, *, kind: str) -> Actual:
        hits = usage.prompt_cache_hit_tokens
        misses = max(usage.prompt_cache_miss_tokens, usage.prompt_tokens - hits)
        p = self.prices.lookup(model)
        peak = p.peak_multiplier if self.policy.peak else 1.0
        usd = self.prices.cost(model, cache_hit_tokens=hits, cache_miss_tokens=misses,
                               completion_tokens=usage.completion_tokens, peak=self.policy.peak)
        return Actual(usd=usd, cache_hit_tokens=hits, cache_miss_tokens=misses,
                      completion_tokens=usage.completion_tokens, kind=kind,
                      saved_usd=hits * (p.cache_miss - p.cache_hit) / 1e6 * peak)

    def record_outcome(self, run_id: str, *, session_id: str, agent: str, outcome: str,
                       task_kind: str = "") -> None:
        """How a run ended ("finished", "stopped", "budget", "failed", …): feeds base rates."""
        self.book.record_outcome(run_id=run_id, session_id=session_id, agent=agent,
                                 task_kind=task_kind or agent, outcome=outcome)

    def state_line(self, plan: CallPlan) -> str:
        """One line of budget state for a trailing reminder (never for the cached prefix)."""
        parts = []
        for scope in self.scopes_for(plan):
            s = self.ledger.state(scope)
            if s.max_usd is not None:
                parts.append(f"{scope.split(':')[0]} ${s.spent_usd:.4f}/${s.max_usd:.4f}")
            if s.max_tokens is not None:
                parts.append(f"{scope.split(':')[0]} {s.spent_tokens}/{s.max_tokens} tokens")
        return "budget: " + ("; ".join(parts) if parts else "no limits")

    # --- at a cap ---------------------------------------------------------------------------

    async def _at_cap(self, plan: CallPlan, cap: ReservationRefused, facts: FactsSource | None,
                      usd: float, tokens: int) -> None:
        """Return once the blocked scope was extended; raise :class:`BudgetStop` otherwise."""
        state = self.ledger.state(cap.scope)
        unit = cap.unit
        spent, held, needed = ((state.spent_usd, state.reserved_usd, usd) if unit == "usd"
                               else (state.spent_tokens, state.reserved_tokens, tokens))
        max_step = self.policy.max_step_usd if unit == "usd" else self.policy.max_step_tokens
        request = ExtensionRequest(
            request_id=self.book.new_request_id(), session_id=plan.session_id,
            run_id=plan.run_id, agent=plan.agent, kind=plan.kind, scope=cap.scope, unit=unit,
            limit=cap.limit, spent=spent, in_flight=held, needed=needed, max_step=max_step,
            extensions_so_far=self.book.extensions(plan.run_id), facts=RunFacts(),
            base_rates=BaseRates(task_kind=plan.agent))
        forced = None
        try:
            run_facts = await self._facts(plan, facts)
        except Exception as e:  # a broken facts source must not unfreeze anything
            run_facts, forced = RunFacts(), ("facts_error", f"{type(e).__name__}: {e}")
        request.facts = run_facts
        request.base_rates = self.book.base_rates(run_facts.task_kind or plan.agent)
        self.book.open_request(request)
        log.info("budget cap on %s for run %s: request %s", cap.scope, plan.run_id,
                 request.request_id)

        shortfall = spent + held + needed - cap.limit
        if forced is None and request.extensions_so_far >= self.policy.max_extensions_per_run:
            forced = ("max_extensions", f"the run already had {request.extensions_so_far} "
                                        "extensions, the policy's maximum")
        if forced is None and shortfall > max_step + 1e-12:
            forced = ("shortfall_over_max",
                      f"this call alone needs {_fmt(shortfall, unit)} more, over the maximum "
                      f"step {_fmt(max_step, unit)}")
        if forced is None and self.policy.on_cap == "deny":
            forced = ("policy_deny", "the policy denies every extension")
        if forced is None and self.policy.on_cap == "auditor" and self.auditor is None:
            forced = ("no_auditor", "no auditor for this engine and no person watching "
                                    "(set [budget] auditor = SPEC, or on_cap = \"human\")")
        if forced is not None:
            self.book.resolve(request.request_id, Verdict(decision="deny", cause=forced[0],
                                                          reason=forced[1], decider="policy"))
        else:
            try:
                await self._decide(request)
            except BaseException:
                # The frozen run was cancelled (or broke): nobody waits for this request any
                # more, so it must not sit in front of a person as pending.
                with anyio.CancelScope(shield=True):
                    self.book.resolve(request.request_id, Verdict(
                        decision="deny", cause="cancelled", decider="policy",
                        reason="the waiting run was cancelled before a decision"))
                raise

        decided = self.book.applied_decision(request.request_id)
        if decided is not None and decided.decision == "approve":
            log.info("budget request %s approved by %s: +%s", request.request_id,
                     decided.decider, _fmt(decided.amount, unit))
            return
        verdict = (Verdict(decision="deny", reason="no decision recorded", cause="missing")
                   if decided is None else
                   Verdict(decision="deny", reason=decided.reason, cause=decided.cause,
                           decider=decided.decider))
        raise BudgetStop(
            f"budget stop: {cap.scope} limit {_fmt(cap.limit, unit)}, spent {_fmt(spent, unit)} "
            f"+ {_fmt(held, unit)} in flight, the {plan.kind} call needs up to "
            f"{_fmt(needed, unit)}; extension denied by {verdict.decider} "
            f"({verdict.cause}): {verdict.reason}",
            scope=cap.scope, unit=unit, limit=cap.limit, spent=spent, needed=needed,
            request_id=request.request_id, verdict=verdict)

    async def _facts(self, plan: CallPlan, facts: FactsSource | None) -> RunFacts:
        got = facts() if facts is not None else RunFacts()
        if inspect.isawaitable(got):
            got = await got
        if not isinstance(got, RunFacts):
            raise WhaleboneError(f"facts() returned {type(got).__name__}, not RunFacts")
        # Spend comes from the ledger, not from the caller: it is the one fact we measure.
        return got.model_copy(update={"spend_by_kind":
                                      self.ledger.spend_by_kind(f"run:{plan.run_id}")})

    async def _decide(self, request: ExtensionRequest) -> None:
        """Return once the request is no longer pending: the auditor (if the policy uses one)
        and people (always) race; the first decision wins and the other is cancelled."""
        rid = request.request_id
        deadline = (None if self.policy.on_cap == "auditor" or self.policy.human_wait_s is None
                    else anyio.current_time() + self.policy.human_wait_s)

        async with anyio.create_task_group() as tg:

            async def audit() -> None:
                try:
                    verdict = await self._audit(request)
                except Exception as e:  # default deny, whatever broke (prices, tokenizer, …)
                    assert self.auditor is not None
                    verdict = Verdict(decision="deny", cause="auditor_error",
                                      reason=f"{type(e).__name__}: {e}",
                                      decider=self.auditor.name)
                self.book.resolve(rid, verdict)  # logged even if a person decided first
                tg.cancel_scope.cancel()

            async def watch_people() -> None:
                while self.book.status(rid) == "pending":
                    if deadline is not None and anyio.current_time() >= deadline:
                        self.book.resolve(rid, Verdict(
                            decision="deny", cause="timeout", decider="policy",
                            reason=f"no person decided within {self.policy.human_wait_s:g} s"))
                        break
                    await anyio.sleep(self.policy.poll_s)
                tg.cancel_scope.cancel()

            if self.policy.on_cap == "auditor":
                tg.start_soon(audit)
            tg.start_soon(watch_people)

    async def _audit(self, request: ExtensionRequest) -> Verdict:
        """One auditor call, itself bounded and metered (kind "auditor") in the auditor's daily
        scope and the global one; no room for it in either means deny."""
        assert self.auditor is not None
        if isinstance(self.auditor, RuleDecider):  # no model, nothing to meter
            verdict, _ = await self.auditor.decide(request)
            return verdict
        engine = self.auditor.engine
        gen = self.auditor.generation_request(request, self.policy.auditor_max_tokens)
        try:
            prompt_tokens = engine.count_tokens(gen.prompt or "")
        except ImportError:  # no tokenizer installed: bytes bound tokens from above
            prompt_tokens = len((gen.prompt or "").encode())
        plan = CallPlan(request.run_id, request.session_id, request.agent, "auditor",
                        engine.model, prompt_tokens, 0, self.policy.auditor_max_tokens)
        usd, tokens = self.worst_case(plan)
        scopes = [day_scope("auditor"), day_scope("global")]
        self.ledger.ensure_limit(Limit(scope=scopes[0], max_usd=self.policy.auditor_day_usd))
        try:
            rid = self.ledger.reserve(scopes, usd=usd, tokens=tokens)
        except ReservationRefused as e:
            return Verdict(decision="deny", cause="no_budget_for_auditor", reason=str(e),
                           decider=self.auditor.name)
        usage: Usage | None = None
        verdict: Verdict | None = None
        try:
            verdict, usage = await self.auditor.decide(
                request, timeout_s=self.policy.auditor_timeout_s,
                max_tokens=self.policy.auditor_max_tokens)
        finally:
            # Unknown usage (cancelled or timed out mid-call) is charged at its bound.
            if usage is not None:
                actual = self.price(usage, engine.model, kind="auditor")
            elif verdict is not None and verdict.cause == "engine_error":
                actual = Actual(usd=0.0, kind="auditor")  # the engine refused: nothing ran
            else:
                actual = Actual(usd=usd, cache_miss_tokens=prompt_tokens,
                                completion_tokens=tokens - prompt_tokens, kind="auditor")
            with anyio.CancelScope(shield=True):
                self.ledger.settle(rid, actual, scopes=scopes)
        return verdict.model_copy(update={"cost_usd": actual.usd, "tokens": actual.tokens})


Number = TypeVar("Number", int, float)


def _strictest(a: Number | None, b: Number | None) -> Number | None:
    return b if a is None else a if b is None else min(a, b)


def clamp_amount(amount: float | None, max_step: float) -> float:
    """A person's amount: the maximum step when none is given, never more than it."""
    if amount is None:
        return max_step
    if not math.isfinite(amount) or amount <= 0:
        raise WhaleboneError(f"amount must be a positive number, got {amount!r}")
    return min(amount, max_step)
