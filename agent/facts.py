"""Objective facts about a run, for the budget guard's auditor.

The auditor that decides whether a frozen run may spend more must see what happened, not what the
worker says happened (a worker asked about its own budget approves itself nearly every time). So
these facts come from the session's record only: the task, the steps taken, every tool call with
its arguments and outcome, the shell commands run and their exit status, the files written,
tokens and spend by kind of call, repeated identical calls, how much new information each step
brought, and the time elapsed. No model-written text but the task itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from typing import Any

from whalebone.agent.store import Session

_EXIT = re.compile(r"^exit code (-?\d+)")
_WRITERS = ("write_file", "edit_file", "create", "str_replace", "insert", "delete", "rename")


def collect_facts(session: Session, *, task: str, steps: int, started: float,
                  task_kind: str = "") -> dict[str, Any]:
    """Every fact the runtime knows, named as the budget room's ``RunFacts`` names them."""
    journal = session.store.journal(session.id)
    commands = []
    for e in journal:
        if e.name == "shell":
            m = _EXIT.match(e.result or "")
            commands.append({"command": str(e.arguments.get("command", ""))[:500],
                             "exit_status": int(m.group(1)) if m else None})
    files = sorted({str(e.arguments.get("path", e.arguments.get("new_path", "")))
                    for e in journal if e.name in _WRITERS and e.status == "finished"
                    and not e.is_error} - {""})
    signatures = Counter(json.dumps([e.name, e.arguments], sort_keys=True) for e in journal)
    # New information per step: the share of a step's calls whose result was never seen before.
    seen: set[str] = set()
    per_step: dict[str, list[bool]] = {}
    for e in journal:
        digest = hashlib.blake2b((e.result or "").encode("utf-8", "surrogatepass"),
                                 digest_size=8).hexdigest()
        step = e.call_id.rsplit("_", 1)[0]  # call ids are call_<seq>_<index>, one seq a step
        per_step.setdefault(step, []).append(digest not in seen)
        seen.add(digest)
    spend: dict[str, float] = {}
    for u in session.store.usage(session.id):
        spend[u.kind] = spend.get(u.kind, 0.0) + u.price
    return {
        "task": task,
        "task_kind": task_kind,
        "steps": steps,
        "elapsed_s": time.monotonic() - started,
        "spend_by_kind": spend,  # the guard replaces it with the ledger's own figures
        "files_changed": files,
        "commands": commands[-50:],
        "tool_calls": len(journal),
        "tool_errors": sum(1 for e in journal if e.is_error),
        "repeated_identical_calls": max(signatures.values(), default=0),
        "new_info_per_step": [sum(v) / len(v) for v in per_step.values()],
    }


def to_run_facts(facts: dict[str, Any], run_facts_type: Any) -> Any:
    """Build the budget room's ``RunFacts`` from the facts it declares fields for.

    The budget room owns that type (and refuses unknown fields); passing only the fields it has
    keeps both rooms free to grow facts without breaking the other.
    """
    fields = getattr(run_facts_type, "model_fields", None)
    if fields is None:  # a dataclass
        fields = getattr(run_facts_type, "__dataclass_fields__", {})
    return run_facts_type(**{k: v for k, v in facts.items() if k in fields})
