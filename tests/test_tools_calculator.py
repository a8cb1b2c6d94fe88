from __future__ import annotations

import time

import anyio
import pytest

from whalebone.tools import ToolError, ToolRegistry
from whalebone.tools.calculator import MAX_DIGITS, CalculatorError, calculator, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("1 / 3", "0.333333333333333"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16)", "4"),
        ("round(2.675, 2)", "2.67"),
        ("log(8, 2)", "3"),
        ("max(1, 5, 3) - min(4, 2)", "3"),
        ("factorial(20)", "2432902008176640000"),
        ("2 ** 200", str(2**200)),  # integers stay exact
        ("sin(pi / 2)", "1"),
        ("gcd(12, 18) * lcm(4, 6)", "72"),
        ("3 × 4 ÷ 2 − 1", "5"),  # the typographic operators models produce
        ("1_000_000 * 3", "3000000"),
        ("-0.0", "0"),
    ],
)
def test_evaluates_arithmetic_exactly_or_to_double_precision(expression: str,
                                                              expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('id')", "unknown function"),
        ("().__class__.__bases__", "Attribute is not allowed"),
        ("open", "unknown name 'open'"),
        ("[x for x in range(9)]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("'a' * 3", "'a' is not a number"),
        ("True + 1", "True is not a number"),
        ("2 ^ 3", "use ** for powers"),
        ("1 << 4", "BinOp is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("1, 2", "Tuple is not allowed"),
        ("1j * 2", "1j is not a number"),
        ("x = 3", "syntax error"),
        ("2 +", "syntax error"),
        ("", "empty expression"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("sqrt(-1)", "sqrt(-1): math domain error"),
        ("(-8) ** (1/3)", "not a real number"),
        ("10.0 ** 400", "too large for a floating-point number"),
        ("exp(1000)", "too large"),
        ("round(1.5, 1000)", "digits between -100 and 100"),
        ("max()", "max(): "),
        ("sqrt(x=4)", "plain positional arguments"),
        ("factorial(2.5)", "non-negative integer"),
    ],
)
def test_refuses_what_is_not_arithmetic_with_a_reason(expression: str, needle: str) -> None:
    with pytest.raises(CalculatorError) as e:
        calculator(expression)
    assert needle in str(e.value)
    assert isinstance(e.value, ToolError)


@pytest.mark.parametrize(
    "expression",
    ["9 ** 9 ** 9", "10 ** 1001", "2 ** (2 ** 64)", "factorial(100000)",
     "(10 ** 600) * (10 ** 600)", "lcm(10 ** 999, 10 ** 999 - 1)"],
)
def test_huge_results_are_refused_before_they_are_computed(expression: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError, match=f"more than {MAX_DIGITS} digits"):
        evaluate(expression)
    # A generous bound: computing any of these would take minutes or exhaust memory.
    assert time.perf_counter() - start < 1.0


def test_powers_of_small_bases_are_not_mistaken_for_huge_ones() -> None:
    assert calculator("1 ** 10 ** 12") == "1"
    assert calculator("(-1) ** (10 ** 12 + 1)") == "-1"
    assert calculator("0 ** 10 ** 12") == "0"
    assert calculator("0.5 ** 10 ** 12") == "0"


def test_deep_nesting_and_long_input_are_refused_not_crashed() -> None:
    with pytest.raises(CalculatorError, match="too long"):
        evaluate("1+" * 5_000 + "1")
    with pytest.raises(CalculatorError, match=r"nested too deeply|syntax error"):
        evaluate("(" * 990 + "1" + ")" * 990)
    assert evaluate("-" * 300 + "1") == 1  # deep but legal unary chains still evaluate


def test_as_a_registered_tool_errors_reach_the_model() -> None:
    registry = ToolRegistry([calculator])
    ok = anyio.run(registry.call, "calculator", {"expression": "6 * 7"})
    bad = anyio.run(registry.call, "calculator", {"expression": "6 / 0"})
    assert (ok.content, ok.is_error) == ("42", False)
    assert bad.is_error and "division by zero" in bad.content
    assert registry.schemas()[0]["function"]["parameters"]["required"] == ["expression"]
