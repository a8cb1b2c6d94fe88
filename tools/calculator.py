"""``calculator``: arithmetic for the model, evaluated from the syntax tree, never with ``eval``.

The expression is parsed with :mod:`ast` and walked by hand; only numbers, ``+ - * / // % **``,
parentheses, a fixed table of math functions and the constants ``pi``, ``e``, ``tau`` are
understood. Everything else (names, attributes, strings, comprehensions, lambdas) is refused by
name, so the model learns what to fix. Integers are exact, but no result may grow past
:data:`MAX_DIGITS` digits: ``9**9**9`` is refused *before* it is computed, from the size its
operands imply, so a hostile expression cannot pin a CPU or exhaust memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from whalebone.tools.registry import ToolError

Number = int | float

MAX_LENGTH = 2_000  # characters of expression (deep nesting also ends here, not in a crash)
MAX_DIGITS = 1_000  # decimal digits of any integer produced along the way
_MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

# What the model commonly types for operators Python spells differently.
_SPELLINGS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"})


class CalculatorError(ToolError):
    """The expression is not one the calculator evaluates, or its result is out of bounds."""


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers) or to double precision.

    Supports + - * / // % ** and parentheses, the constants pi, e, tau, and the functions
    abs, round, min, max, sqrt, cbrt, exp, log (natural, or log(x, base)), log10, log2,
    sin, cos, tan, asin, acos, atan, atan2, hypot, degrees, radians, floor, ceil,
    factorial, gcd, lcm. Use ** for powers (^ is not a power here).
    """
    return format_number(evaluate(expression))


def evaluate(expression: str) -> Number:
    """The value of ``expression``; :class:`CalculatorError` saying why if there is none."""
    text = expression.translate(_SPELLINGS).strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_LENGTH:
        raise CalculatorError(f"expression too long ({len(text)} characters, at most "
                              f"{MAX_LENGTH})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else ""
        raise CalculatorError(f"not an arithmetic expression: syntax error{where}") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("expression nested too deeply") from None
    try:
        return _Evaluator().visit(tree.body)
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("result too large for a floating-point number") from None


def format_number(value: Number) -> str:
    """Integers in full; floats to 15 significant digits, so 0.1 + 0.2 reads 0.3."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        raise CalculatorError(f"result is not a finite number ({value})")
    text = f"{value:.15g}"
    return "0" if text == "-0" else text


def _bits(n: int) -> int:
    return abs(n).bit_length()


def _check_int(n: Number) -> Number:
    if isinstance(n, int) and _bits(n) > _MAX_BITS:
        raise CalculatorError(f"result has more than {MAX_DIGITS} digits")
    return n


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # |base**exponent| < 2**(bits(base) * exponent): refuse before computing.
        if (_bits(base) - 1) * exponent > _MAX_BITS:
            raise CalculatorError(f"result has more than {MAX_DIGITS} digits")
    if isinstance(exponent, float) or exponent < 0:
        base = float(base)
    result = operator.pow(base, exponent)
    if isinstance(result, complex):
        raise CalculatorError("result is not a real number (fractional power of a negative "
                              "number)")
    return result


def _multiply(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and _bits(a) + _bits(b) > _MAX_BITS + 1:
        raise CalculatorError(f"result has more than {MAX_DIGITS} digits")
    return a * b


def _factorial(n: Number) -> int:
    if not isinstance(n, int) or n < 0:
        raise CalculatorError("factorial takes a non-negative integer")
    if n > 1 and math.lgamma(n + 1) / math.log(10) > MAX_DIGITS:
        raise CalculatorError(f"factorial({n}) has more than {MAX_DIGITS} digits")
    return math.factorial(n)


def _round(x: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > 100:
        raise CalculatorError("round(x, digits) takes an integer digits between -100 and 100")
    return round(x) if digits == 0 and isinstance(x, float) else round(x, digits)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}

FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs, "round": _round, "min": min, "max": max,
    "sqrt": math.sqrt, "cbrt": math.cbrt, "exp": math.exp, "log": _log,
    "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "hypot": math.hypot, "degrees": math.degrees, "radians": math.radians,
    "floor": math.floor, "ceil": math.ceil, "factorial": _factorial,
    "gcd": math.gcd, "lcm": math.lcm,
}


class _Evaluator(ast.NodeVisitor):
    def generic_visit(self, node: ast.AST) -> Any:
        what = type(node).__name__
        hint = " (use ** for powers)" if isinstance(node, ast.BinOp) and isinstance(
            node.op, ast.BitXor) else ""
        raise CalculatorError(f"{what} is not allowed in a calculator expression{hint}")

    def visit_Constant(self, node: ast.Constant) -> Number:
        # bool is an int subclass; strings, bytes, None and complex are refused here too.
        if type(node.value) in (int, float):
            return _check_int(node.value)
        raise CalculatorError(f"{node.value!r} is not a number")

    def visit_Name(self, node: ast.Name) -> float:
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r} (constants: "
                              f"{', '.join(CONSTANTS)})")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Number:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        return self.generic_visit(node.op)

    def visit_BinOp(self, node: ast.BinOp) -> Number:
        op = _BINARY.get(type(node.op))
        if op is None:
            return self.generic_visit(node)
        left, right = self.visit(node.left), self.visit(node.right)
        return _check_int(op(left, right))

    def visit_Call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)[:80]
            raise CalculatorError(f"unknown function {name!r} (functions: "
                                  f"{', '.join(FUNCTIONS)})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise CalculatorError(f"{node.func.id}() takes plain positional arguments")
        args = [self.visit(a) for a in node.args]
        try:
            return _check_int(FUNCTIONS[node.func.id](*args))
        except CalculatorError:
            raise
        except (ValueError, TypeError) as e:
            raise CalculatorError(f"{node.func.id}({', '.join(map(format_number, args))}): "
                                  f"{e}") from None
