"""The budget policy's own checks: a misspelt key is refused, never read as "no limit"."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from whalebone.budget.policy import BudgetPolicy


def test_a_misspelt_limit_is_refused_naming_the_key_and_the_likely_one() -> None:
    with pytest.raises(ValidationError, match=r"unknown keys \['sesion_usd'\].*'session_usd'"):
        BudgetPolicy.model_validate({"sesion_usd": 0.5})
    with pytest.raises(ValidationError, match="zzz"):
        BudgetPolicy(zzz=1)  # type: ignore[call-arg]


def test_known_keys_still_validate_and_copy() -> None:
    policy = BudgetPolicy.model_validate({"session_usd": 0.5, "on_cap": "deny"})
    assert policy.session_usd == 0.5 and policy.on_cap == "deny"
    assert policy.model_copy(update={"extra_scopes": ("x",)}).extra_scopes == ("x",)
