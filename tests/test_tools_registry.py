from __future__ import annotations

import time
from typing import Literal

import anyio
import pytest
from pydantic import BaseModel, Field

from whalebone.dsml import encode_messages, parse_completion
from whalebone.dsml.emit import emit_completion
from whalebone.tools import Tool, ToolError, ToolRegistry

registry = ToolRegistry()


@registry.tool
def calculator(expression: str, precision: int = 6) -> str:
    """Evaluate an arithmetic expression."""
    return f"{round(eval(expression, {'__builtins__': {}}), precision)}"  # test tool only


class Forecast(BaseModel):
    city: str = Field(description="City name")
    days: int = Field(1, ge=1, le=7)
    units: Literal["c", "f"] = "c"


@registry.tool(idempotent=True)
async def forecast(req: Forecast) -> dict:
    """Weather forecast."""
    return {"city": req.city, "days": req.days, "units": req.units}


def run(coro):  # type: ignore[no-untyped-def]
    return anyio.run(lambda: coro)


def test_schemas_come_from_signatures_and_models() -> None:
    calc, fc = registry.schemas()
    assert calc == {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "additionalProperties": False,
                       "properties": {"expression": {"type": "string"},
                                      "precision": {"type": "integer", "default": 6}},
                       "required": ["expression"]}}}
    props = fc["function"]["parameters"]["properties"]
    assert props["units"] == {"type": "string", "enum": ["c", "f"], "default": "c"}
    assert props["city"]["description"] == "City name"
    assert registry["forecast"].idempotent and not registry["calculator"].idempotent


def test_schemas_render_identically_every_time() -> None:
    again = ToolRegistry([registry["calculator"], registry["forecast"]])
    system = {"role": "system", "content": "s"}
    one = encode_messages([{**system, "tools": registry.schemas()}], "thinking")
    two = encode_messages([{**system, "tools": again.schemas()}], "thinking")
    assert one == two


def test_calls_validate_and_run_sync_and_async() -> None:
    ok = run(registry.call("calculator", {"expression": "2+3*4"}))
    assert (ok.content, ok.is_error) == ("14", False)
    fc = run(registry.call("forecast", {"city": "Oslo", "days": 3}))
    assert fc.content == '{"city": "Oslo", "days": 3, "units": "c"}'


@pytest.mark.parametrize(
    ("name", "args", "needle"),
    [
        ("calculator", {}, "expression: Field required"),
        ("calculator", {"expression": "1", "bogus": 1}, "bogus: Extra inputs"),
        ("forecast", {"city": "Oslo", "days": 30}, "days: Input should be less than or equal"),
        ("nope", {}, "there is no tool named 'nope' (tools: calculator, forecast)"),
        ("calculator", {"expression": "1/0"}, "calculator failed: ZeroDivisionError"),
    ],
)
def test_bad_calls_become_tool_errors_not_crashes(name: str, args: dict, needle: str) -> None:
    result = run(registry.call(name, args))
    assert result.is_error and needle in result.content


def test_timeout_and_tool_error() -> None:
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def refuses(path: str) -> str:
        raise ToolError(f"{path} is outside the workspace")

    r = ToolRegistry()
    r.add(slow, timeout=0.2)
    r.add(refuses)
    assert run(r.call("slow", {"seconds": 0.0})).content == "done"
    timed_out = run(r.call("slow", {"seconds": 2}))
    assert timed_out.is_error and "timed out after 0.2 s" in timed_out.content
    assert run(r.call("refuses", {"path": "/etc"})).content == "/etc is outside the workspace"


def test_parser_checks_calls_against_registry_schemas() -> None:
    text = emit_completion("", reasoning="r", tool_calls=[
        ("forecast", {"req": 1}), ("calculator", {"expression": "1+1", "precision": "2"})])
    parsed = parse_completion(text, "thinking", tools=registry.schemas())
    assert [[e.kind for e in c.errors] for c in parsed.tool_calls] == [
        ["missing_parameter", "unknown_parameter"], ["type_mismatch"]]


def test_definitions_that_cannot_be_described_are_refused() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def star(*args: int) -> None:
        return None

    with pytest.raises(TypeError, match="needs a type annotation"):
        Tool(untyped)
    with pytest.raises(TypeError, match=r"\*args"):
        Tool(star)
    with pytest.raises(ValueError, match="already registered"):
        registry.add(calculator)
