"""whalebone budget: spend, reservations, cache savings and decisions per scope; a person's
approve/deny of a frozen run's extension request; limits.

    whalebone budget [show] [--json]              every scope, pending requests, recent decisions
    whalebone budget approve SESSION [--amount X] [--reason TEXT] [--request ID]
    whalebone budget deny SESSION [--reason TEXT] [--request ID]
    whalebone budget set SCOPE [--usd X] [--tokens N]

``set`` takes an exact scope (``session:abc``, ``run:r1``, ``global:2026-11-23``,
``agent:coder:2026-11-23``, or any extra scope) or a family: ``run``, ``session``, ``agent``
set the limit every new scope of that family gets; ``global`` and ``agent:NAME`` set the daily
limit from today on (today's scope included). The ledger is ``--db``, else
``$WHALEBONE_HOME/budget.db`` (``WHALEBONE_HOME`` defaults to ``~/.whalebone``).

A person's decision is written to the ledger in one transaction with the extension itself; the
frozen guard, polling the ledger, sees it and goes on (or stops).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from whalebone.core.errors import WhaleboneError
from whalebone.core.home import home

SET_HELP = """scopes:
  global | day     everyone's spend per UTC day, from today on (today's scope included)
  agent:NAME       one agent's spend per UTC day, from today on (NAME: the agent's name,
                   "whalebone" unless the config's [agent] name says otherwise)
  session:ID       one session, over its whole life (all its runs and resumes)
  run:ID           one run (the id a budget stop names)
  schedule:NAME    one daemon schedule, over its life
  run | session | agent
                   the default limit every new run / session / agent-day scope gets
  global:DATE, agent:NAME:DATE
                   one exact day (YYYY-MM-DD, UTC)
  any other name   an exact scope (e.g. one the config's extra_scopes charges)

examples:
  whalebone budget set global --usd 5          # at most $5 a day, everyone together
  whalebone budget set day --tokens 2000000    # at most 2M tokens a day
  whalebone budget set session --usd 0.50      # every new session: at most $0.50
  whalebone budget set session:3f2a9c --usd 2  # this session: $2 (raise or lower)
  whalebone budget set agent:coder --usd 1     # the agent "coder": $1 a day

With a priced engine (DeepSeek, a router with prices) and no daily global limit set anywhere,
$5 a day applies to everyone; 'whalebone budget set global --usd X' replaces it. At a limit the
run freezes and the auditor (or you: whalebone budget approve|deny SESSION) decides."""


def default_db() -> Path:
    return home() / "budget.db"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("budget", help="spend, limits and extension decisions",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=None, help="the ledger (default: "
                        "$WHALEBONE_HOME/budget.db)")
    parser.set_defaults(handler=show, json=False)
    sub = parser.add_subparsers(dest="budget_command", metavar="ACTION")

    p = sub.add_parser("show", help="spend, reservations, cache savings, decisions per scope")
    _db_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=show)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        p = sub.add_parser(name, help=f"{verb} a frozen run's pending extension request")
        _db_option(p)
        p.add_argument("session", help="the session whose pending request(s) to decide")
        p.add_argument("--request", help="decide only this request id")
        p.add_argument("--reason", default="", help="why (logged with the decision)")
        if name == "approve":
            p.add_argument("--amount", type=float, default=None,
                           help="how much to add, in the request's unit (default and maximum: "
                                "the policy's maximum step)")
        p.set_defaults(handler=decide, decision=name)

    p = sub.add_parser("set", help="set a scope's (or a family's) limit",
                       description="Set a spending limit in the ledger. It applies to the next "
                                   "model call of every front end (run, sessions resume, chat, "
                                   "the daemon, compaction). A family limit set here (global, "
                                   "session, …) and the config file's [budget] combine by the "
                                   "strictest; a limit on one exact scope (session:ID) stands, "
                                   "logged as a decision.",
                       epilog=SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _db_option(p)
    p.add_argument("scope", help="what to limit (see the scopes below)")
    p.add_argument("--usd", type=float, default=None, help="the most it may spend, in USD")
    p.add_argument("--tokens", type=int, default=None,
                   help="the most it may use, in tokens (prompt + completion; counted for "
                        "every engine, the bundled one included)")
    p.set_defaults(handler=set_limit)


def _db_option(parser: argparse.ArgumentParser) -> None:
    # Accepted after the action too; SUPPRESS keeps the parent's value when it is not given.
    parser.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _open(args: argparse.Namespace) -> Any:
    from whalebone.budget.ledger import Ledger
    from whalebone.budget.records import DecisionBook

    return DecisionBook(Ledger(args.db or default_db()))


def _fail(message: str, code: int = 2) -> int:
    print(f"whalebone budget: {message}", file=sys.stderr)
    return code


def show(args: argparse.Namespace) -> int:
    db = args.db or default_db()
    if not db.exists():  # no model call has been made with this home yet
        if args.json:
            print(json.dumps({"ledger": str(db), "scopes": [], "defaults": [], "pending": [],
                              "decisions": []}, indent=2))
        else:
            print(f"ledger {db}: no model call metered yet (every run, chat, daemon job and "
                  "compaction is recorded here)")
        return 0
    book = _open(args)
    ledger = book.ledger
    report: dict[str, Any] = {"ledger": str(db), "scopes": [], "pending": [], "decisions": []}
    for scope in ledger.scopes():
        s = ledger.state(scope)
        decided = book.decisions(where="scope = ?", args=(scope,))
        report["scopes"].append({
            **s.model_dump(),
            "spend_by_kind": ledger.spend_by_kind(scope),
            "approved": sum(1 for d in decided if d.decision == "approve" and d.applied),
            "denied": sum(1 for d in decided if d.decision == "deny" and d.applied),
        })
    report["defaults"] = [d.model_dump() for d in ledger.defaults()]
    report["pending"] = [{"request": r.id, "session": r.session_id, "run": r.run_id,
                          "scope": r.scope, "unit": r.unit, "max_step": r.max_step,
                          "waiting_since": r.created} for r in book.pending()]
    report["decisions"] = [d.model_dump() for d in book.decisions()[-20:]]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"ledger {db}")
    print(f"{'scope':<36} {'limit':>14} {'spent':>12} {'in flight':>12} {'saved':>10} "
          f"{'tokens':>10}  decisions")
    for s in report["scopes"]:
        limit = " / ".join(x for x in (
            None if s["max_usd"] is None else f"${s['max_usd']:.4f}",
            None if s["max_tokens"] is None else f"{s['max_tokens']} tok") if x) or "-"
        money = [f"${s[k]:.6f}" for k in ("spent_usd", "reserved_usd", "saved_usd")]
        print(f"{s['scope']:<36} {limit:>14} {money[0]:>12} {money[1]:>12} {money[2]:>10} "
              f"{s['spent_tokens']:>10}  +{s['approved']} -{s['denied']}")
    if report["defaults"]:
        print("\nlimits new scopes get (whalebone budget set FAMILY):")
        for d in report["defaults"]:
            limit = " / ".join(x for x in (
                None if d["max_usd"] is None else f"${d['max_usd']:.4f}",
                None if d["max_tokens"] is None else f"{d['max_tokens']} tok") if x) or "-"
            print(f"  {d['scope']:<34} {limit:>14}")
    if report["pending"]:
        print("\npending extension requests (frozen runs):")
        for r in report["pending"]:
            print(f"  {r['request']}  session {r['session']}  run {r['run']}  {r['scope']}  "
                  f"max step {r['max_step']:g} {r['unit']}")
    if report["decisions"]:
        print("\nrecent decisions:")
        for d in report["decisions"]:
            applied = "" if d["applied"] else " (too late: already decided)"
            print(f"  {d['request_id']}  {d['scope']}  {d['decider']}  {d['decision']} "
                  f"{d['amount']:g} {d['unit']}  [{d['cause']}] {d['reason']}{applied}")
    return 0


def decide(args: argparse.Namespace) -> int:
    from whalebone.budget.guard import clamp_amount
    from whalebone.budget.policy import Verdict

    if not (args.db or default_db()).exists():
        return _fail(f"no ledger at {args.db or default_db()}", 1)
    book = _open(args)
    pending = [r for r in book.pending(args.session)
               if args.request is None or r.id == args.request]
    if not pending:
        which = f"request {args.request} of " if args.request else ""
        return _fail(f"no pending extension request for {which}session {args.session!r}", 1)
    decider = f"human:{getpass.getuser()}"
    for req in pending:
        try:
            amount = (clamp_amount(getattr(args, "amount", None), req.max_step)
                      if args.decision == "approve" else 0.0)
        except WhaleboneError as e:
            return _fail(str(e))
        verdict = Verdict(decision=args.decision, amount=amount, decider=decider,
                          reason=args.reason or f"{args.decision}d from the command line")
        won = book.resolve(req.id, verdict)
        unit = "USD" if req.unit == "usd" else "tokens"
        print(f"{req.id}: {args.decision}"
              + (f" +{amount:g} {unit} on {req.scope}" if args.decision == "approve" else "")
              + ("" if won else " (logged, but the request was already decided)"))
    return 0


def set_limit(args: argparse.Namespace) -> int:
    if args.usd is None and args.tokens is None:
        return _fail("give --usd and/or --tokens")
    book = _open(args)
    try:
        scope, lim, family = book.set_limit(args.scope, usd=args.usd, tokens=args.tokens,
                                            decider=f"human:{getpass.getuser()}",
                                            reason="whalebone budget set")
    except WhaleboneError as e:
        return _fail(str(e))
    if family:
        print(f"default limit for new {args.scope} scopes set")
    print(f"{scope}: max_usd={lim.max_usd} max_tokens={lim.max_tokens}")
    return 0
