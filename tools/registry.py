"""The typed tool registry: plain Python functions in, V4 tool schemas and safe calls out.

A tool is a function with annotated parameters (or one pydantic-model parameter). Its JSON
schema comes from pydantic, so the model sees exactly what the function accepts, and a call's
arguments are validated by the same schema before the function runs: invalid arguments go back
to the model as a tool error, never as a crash. Tools render in registration order with
canonical JSON, so the tool list, and with it the cached prompt prefix, is byte-stable.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any, get_type_hints

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from whalebone.core.errors import WhaleboneError


class ToolError(WhaleboneError):
    """A tool failed in a way the model should hear about (bad arguments, refused path, …)."""


class ToolResult(BaseModel):
    """What a call returned: text for the model, and whether it is an error."""

    content: str
    is_error: bool = False


class Tool:
    """One tool: its name, description, argument model and function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = inspect.cleandoc(description or fn.__doc__ or "").strip()
        self.idempotent = idempotent  # safe to re-run after a crash interrupted it
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        self.model, self._single_model = _arguments_model(fn, self.name)

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``{"type": "function", "function": {…}}`` form V4 is given."""
        params = self.model.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        function: dict[str, Any] = {"name": self.name, "description": self.description,
                                    "parameters": params}
        return {"type": "function", "function": function}

    def validate(self, arguments: Mapping[str, Any]) -> BaseModel:
        try:
            return self.model.model_validate(dict(arguments))
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                for err in e.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}") from None

    async def call(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Validate, run (sync tools in a worker thread), and turn the outcome into text."""
        try:
            parsed = self.validate(arguments)
            if self._single_model:
                args: tuple[Any, ...] = (parsed,)
                kwargs: dict[str, Any] = {}
            else:
                args, kwargs = (), {k: getattr(parsed, k) for k in self.model.model_fields}
            with anyio.fail_after(self.timeout) if self.timeout else nullcontext():
                if self.is_async:
                    out = await self.fn(*args, **kwargs)
                else:
                    # A thread cannot be interrupted: on timeout or cancellation it is abandoned
                    # (it finishes in the background) and the call reports at once.
                    out = await anyio.to_thread.run_sync(lambda: self.fn(*args, **kwargs),
                                                         abandon_on_cancel=True)
        except ToolError as e:
            return ToolResult(content=str(e), is_error=True)
        except TimeoutError:
            return ToolResult(content=f"{self.name} timed out after {self.timeout:g} s",
                              is_error=True)
        except Exception as e:  # a tool's own bug is reported to the model, not raised
            return ToolResult(content=f"{self.name} failed: {type(e).__name__}: {e}",
                              is_error=True)
        return ToolResult(content=_as_text(out))


class ToolRegistry:
    """Tools by name, in registration order."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool | Callable[..., Any], **options: Any) -> Tool:
        tool = tool if isinstance(tool, Tool) else Tool(tool, **options)
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def add_many(self, tools: Iterable[Tool | Callable[..., Any]]) -> list[Tool]:
        """Add several tools in order (e.g. an MCP server's ``tools()``)."""
        return [self.add(t) for t in tools]

    def tool(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator: ``@registry.tool`` or ``@registry.tool(name=…, idempotent=True)``."""
        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(f, **options)
            return f

        return register if fn is None else register(fn)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Tool schemas for the system message, in registration order."""
        return [t.schema() for t in self._tools.values()]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return ToolResult(content=f"there is no tool named {name!r} (tools: {known})",
                              is_error=True)
        return await tool.call(arguments)


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], bool]:
    """The pydantic model of a function's arguments, and whether it takes one model."""
    sig = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)  # keep Annotated[..., Field(...)]
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    if len(params) == 1 and isinstance(hints.get(params[0].name), type) and issubclass(
        hints[params[0].name], BaseModel
    ):
        return hints[params[0].name], True
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to the model")
        if p.name not in hints:
            raise TypeError(f"tool {name}: parameter {p.name!r} needs a type annotation")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints[p.name], default)
    model = create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model, False


def _as_text(out: Any) -> str:
    if out is None:
        return ""
    if isinstance(out, str):
        return out
    if isinstance(out, BaseModel):
        return out.model_dump_json()
    return json.dumps(out, ensure_ascii=False, default=str)

