"""The one way a front end gets its budget guard: on by default, whatever was configured.

``whalebone run``, ``sessions resume``, ``sessions compact``, ``chat`` and the daemon all call
:func:`open_guard` with their engine and their ``[budget]`` settings (possibly empty), so none
of them can meter or enforce differently:

* every model call is reserved and settled in the ledger (``$WHALEBONE_HOME/budget.db`` unless
  ``ledger = PATH``); a model with no known price is metered at $0 but still in tokens;
* the limits live in the ledger and are read at each reservation, so ``whalebone budget set``
  (or the TUI, or the daemon API) reaches the next call of every front end; a limit in the
  config file and one in the ledger combine by the strictest (see ``BudgetGuard``);
* with a priced engine and no daily global limit anywhere, :data:`DEFAULT_DAY_USD` caps
  everyone's spend per UTC day (``whalebone budget set global --usd X`` or ``global_day_usd``
  in the config changes it); the first run is told so once;
* the decider at a cap is an auditor by default: the cheapest model of the worker's provider
  for a priced engine, the bundled model itself offline, an ``auditor`` tier for a router with
  one, ``auditor = SPEC`` to choose, ``"rule"`` for the fixed rule, ``"none"`` for none. With
  no auditor a front end with no person watching denies; one with a person waits for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from whalebone.budget.auditor import Auditor
from whalebone.budget.guard import BudgetGuard
from whalebone.budget.ledger import Ledger, day_scope
from whalebone.budget.policy import BudgetPolicy
from whalebone.budget.rule import RuleDecider
from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home
from whalebone.engine.base import Engine
from whalebone.engine.prices import Price, PriceTable, UnknownPrice

log = logging.getLogger(__name__)

# The daily cap on everyone's spend with a priced engine when none was set: about 20 million
# uncached V4-Flash prompt tokens, enough for a working day, small enough to notice a runaway.
DEFAULT_DAY_USD = 5.0

NOTICES = "CREATE TABLE IF NOT EXISTS notices (key TEXT PRIMARY KEY, created REAL NOT NULL)"


class BudgetSettingsError(WhaleboneError):
    """The ``[budget]`` settings cannot be used."""


class MeteredPrices(PriceTable):
    """The price table, with $0 for a model it does not know: its calls are still reserved and
    settled in tokens (the loop warns that they are unpriced), never refused for want of a
    price."""

    def lookup(self, model: str, when: dt.date | None = None) -> Price:
        try:
            return super().lookup(model, when)
        except UnknownPrice:
            return Price(model=model, since=dt.date(1970, 1, 1), cache_hit=0.0,
                         cache_miss=0.0, output=0.0, note="unknown: metered in tokens")


def models_of(engine: Engine) -> list[Engine]:
    """The engines that serve calls: a router's members, else the engine itself."""
    inner = getattr(engine, "engines", None)
    return list(inner()) if callable(inner) else [engine]


def priced(engine: Engine, prices: PriceTable) -> bool:
    """Whether any model behind ``engine`` costs money per token."""
    for e in models_of(engine):
        p = prices.lookup(e.model)
        if p.cache_miss > 0 or p.output > 0 or p.cache_hit > 0:
            return True
    return False


def cheapest_model(prefix: str, prices: PriceTable) -> str | None:
    """The cheapest priced model named ``prefix…`` today (miss + output price)."""
    names = {p.model for p in getattr(prices, "_prices", []) if p.model.startswith(prefix)}
    ranked = sorted(names, key=lambda m: (prices.lookup(m).cache_miss
                                          + prices.lookup(m).output, m))
    return ranked[0] if ranked else None


def default_auditor(engine: Engine, prices: PriceTable,
                    open_engine: Callable[[str], Engine] | None) -> Engine | None:
    """The engine that audits ``engine``'s runs when none is configured (None: no auditor)."""
    tiers = getattr(engine, "tiers", None)
    if isinstance(tiers, dict) and "auditor" in tiers:
        return engine  # the router sends tier="auditor" requests to that tier
    for e in models_of(engine):
        if e.name == "bundled":
            return e  # offline: the bundled model, in a fresh context of its own
        if e.name.startswith("deepseek") and open_engine is not None:
            cheapest = cheapest_model("deepseek-", prices)
            if cheapest is not None:
                return open_engine(f"deepseek:{cheapest}")
    return None


def open_guard(engine: Engine, options: Mapping[str, Any] | None = None, *,
               ledger: str | os.PathLike[str] | None = None,
               open_engine: Callable[[str], Engine] | None = None,
               person: bool = False, prices: PriceTable | None = None) -> BudgetGuard:
    """The budget guard for runs on ``engine`` with the ``[budget]`` settings ``options``.

    ``open_engine`` opens an auditor engine by spec; ``person`` says someone is watching (the
    TUI): with no auditor the run then waits for their decision instead of stopping.
    """
    options = dict(options or {})
    path = Path(str(options.pop("ledger", "") or ledger or home() / "budget.db")).expanduser()
    auditor_spec = options.pop("auditor", None)
    table = prices or MeteredPrices()
    try:
        policy = BudgetPolicy.model_validate(options)
    except ValidationError as e:
        raise BudgetSettingsError(f"the [budget] settings are invalid: {e}") from None
    if auditor_spec is not None and not isinstance(auditor_spec, str):
        raise BudgetSettingsError("[budget] auditor must be an engine spec, 'rule' or 'none'")
    auditor: Auditor | RuleDecider | None
    if auditor_spec == "none":
        auditor = None
    elif auditor_spec == "rule":
        auditor = RuleDecider()
    elif auditor_spec:
        if open_engine is None:
            raise BudgetSettingsError(f"[budget] auditor = {auditor_spec!r} cannot be opened here")
        auditor = Auditor(open_engine(auditor_spec))
    else:
        found = default_auditor(engine, table, open_engine)
        auditor = None if found is None else Auditor(found)
    if auditor is None and policy.on_cap == "auditor" and person:
        # Someone is watching: they decide. Headless, the guard denies ("no_auditor").
        policy = policy.model_copy(update={"on_cap": "human"})
    guard = BudgetGuard(Ledger(path), policy=policy, auditor=auditor, prices=table)
    guard.notice = None
    if priced(engine, table):
        guard.notice = _default_day_cap(guard)
    return guard


def _default_day_cap(guard: BudgetGuard) -> str | None:
    """Give a priced engine the default daily cap unless a daily global limit is set anywhere;
    the first time, a one-line notice (None afterwards)."""
    ledger = guard.ledger
    set_by_people = (ledger.default("global"), ledger.limit(day_scope("global")))
    if guard.policy.global_day_usd is not None or any(
            lim is not None and lim.max_usd is not None for lim in set_by_people):
        return None
    # Not in the policy: a limit set later (whalebone budget set global) must replace it, in
    # this process too, not be held to it as the strictest.
    guard.default_day_usd = DEFAULT_DAY_USD
    ledger.db.execute(NOTICES)
    with ledger.transaction() as db:
        told = db.execute("INSERT INTO notices (key, created) VALUES ('default_day_cap', ?) "
                          "ON CONFLICT(key) DO NOTHING", (time.time(),)).rowcount
    if not told:
        return None
    return (f"budget: a paid engine with no daily limit set, so everyone's spend is capped at "
            f"${DEFAULT_DAY_USD:g} a day (UTC); change it with: whalebone budget set global "
            "--usd X")
