"""``whalebone sessions compact ID``: compact a session now, from the command line.

    whalebone sessions compact ID [--keep-recent N] [--engine SPEC] [--json]

The engine summarises the session's older turns on its cached prompt, the same compaction a run
makes near the context window (:meth:`whalebone.agent.Agent.compact`); the system prompt, the
tools, the task and the last N assistant turns stay as they are, and a resumed run continues from
the result. Prints one line (or the :class:`~whalebone.agent.events.Compacted` report as JSON).
"""

from __future__ import annotations

import argparse
from typing import Any

from whalebone.agent.commands import (
    EXIT_CODES,
    build_or_exit,
    engine_options,
    fail,
    store_options,
)
from whalebone.core.errors import WhaleboneError

COMPACT_EXIT_HELP = """exit codes:
  0    compacted
  1    no summary could be had (engine error, unusable summary)
  2    bad usage: arguments, config file, unknown session, or too short to compact
  4    the budget guard refused the summary call
  5    no engine: it cannot be opened (no checkpoint, missing extra, bad spec, no key)
  6    the session is being written by another process
  130  interrupted (Ctrl-C)
the session is left as it was unless the exit code is 0"""


def register_compact(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compact = sub.add_parser("compact", help="replace a session's older turns by a summary",
                              description="Compact the session now: the engine summarises its "
                              "older turns (on the cached prompt); the system prompt, tools, "
                              "task and the last N assistant turns stay as they are.",
                              epilog=COMPACT_EXIT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    compact.add_argument("session")
    compact.add_argument("--keep-recent", type=int, metavar="N", help="assistant turns kept "
                         "verbatim (default: the agent's keep_recent, 6)")
    store_options(compact)
    engine_options(compact)
    compact.add_argument("--json", action="store_true", help="print the report as JSON")
    compact.set_defaults(handler=cmd_compact)


def cmd_compact(args: argparse.Namespace) -> int:
    import anyio

    from whalebone.agent.build import Overrides
    from whalebone.agent.compaction import CompactionFailed
    from whalebone.agent.store import SessionBusy
    from whalebone.budget.guard import BudgetStop

    # No tools and no memory: the session's tool list is in its stored system prompt, and
    # compacting runs none.
    overrides = Overrides(engine=args.engine, model=args.model, store=args.store,
                          session_id=args.session, tools="none", memory="")
    built = build_or_exit(args.config, overrides)
    if isinstance(built, int):
        return built
    agent, engine = built[0], built[0].engine
    args.session = overrides.session_id  # the full id, when a prefix was typed

    async def main() -> Any:
        try:
            return await agent.compact(args.session, keep_recent=args.keep_recent)
        finally:
            await engine.aclose()

    try:
        report = anyio.run(main)
    except KeyboardInterrupt:
        return fail("interrupted; the session is as it was", EXIT_CODES["cancelled"])
    except SessionBusy as e:
        return fail(str(e), EXIT_CODES["busy"])
    except BudgetStop as e:
        return fail(f"the budget guard refused the summary call: {e}", EXIT_CODES["budget"])
    except CompactionFailed as e:
        return fail(f"not compacted: {e}", EXIT_CODES["error"])
    except WhaleboneError as e:  # unknown session, too short, a bad --keep-recent
        return fail(f"not compacted: {e}", EXIT_CODES["usage"])
    if args.json:
        print(report.model_dump_json())
    else:
        print(f"compacted session {args.session}: {report.messages_before} → "
              f"{report.messages_after} messages, {report.tokens_before:,} → "
              f"{report.tokens_after:,} prompt tokens ({report.tokens_saved:,} saved); the "
              f"summary call was {report.summary_hit_rate:.0%} cached")
    return 0
