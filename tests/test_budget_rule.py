"""The fixed rule: which check trips on which facts, and the labelled cases as requests."""

from __future__ import annotations

from whalebone.budget.policy import RunFacts
from whalebone.budget.rule import read, request_from_case
from whalebone.training.budget_cases import shipped_cases


def facts(**kw: object) -> RunFacts:
    base = {"task": "t", "steps": 10, "elapsed_s": 60.0}
    return RunFacts.model_validate({**base, **kw})


def test_each_check_trips_on_its_own_facts_in_order() -> None:
    assert read(facts(new_info_per_step=[0.5, 0.4, 0.6])).tripped is None
    assert read(facts(repeated_identical_calls=5, tool_calls=10, tool_errors=9)).tripped == "loop"
    assert read(facts(new_info_per_step=[0.9, 0.0, 0.05, 0.1])).tripped == "no_new_information"
    assert read(facts(tool_calls=10, tool_errors=6)).tripped == "tool_errors"
    stuck = facts(commands=[{"command": "pytest", "exit_status": 1}] * 3)
    assert read(stuck).tripped == "failing_unchanged" and read(stuck).decision == "deny"
    moving = facts(commands=[{"command": "pytest", "exit_status": 1}] * 3,
                   files_changed=["a.py"])
    assert read(moving).decision == "approve" and not read(moving).stuck


def test_every_labelled_case_becomes_a_request_with_its_facts() -> None:
    cases = shipped_cases()
    requests = [request_from_case(c) for c in cases]
    assert len(requests) == 48
    assert all(r.request_id == c["id"] and r.max_step == c["max_step"]
               for r, c in zip(requests, cases, strict=True))
