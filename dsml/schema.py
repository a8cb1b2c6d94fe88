"""Check decoded tool-call arguments against the tool's JSON schema.

Tool schemas use a small part of JSON Schema: ``type`` (one or a list), ``enum``, ``const``,
``properties``/``required``/``additionalProperties``, ``items``, ``anyOf``/``oneOf``/``allOf``
and ``nullable``. That part is checked here and the rest (formats, patterns, bounds) is left to
the tool itself, whose own validation reports in its result. Messages are one line each, written
for the model to read and fix its call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _is(value: Any, type_: str) -> bool:
    if type_ == "integer" and isinstance(value, float):
        return value.is_integer()
    if type_ in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(type_, object))


Problem = tuple[str, str]  # (issue kind, one-line message)


def check_arguments(arguments: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[Problem]:
    """Problems of a call's decoded arguments against its tool's ``parameters`` schema.

    Kinds: ``missing_parameter``, ``unknown_parameter`` (top level) and ``type_mismatch``.
    """
    return check_object(arguments, parameters, "")


def check_value(value: Any, schema: Mapping[str, Any], path: str) -> list[Problem]:
    """Problems of ``value`` against ``schema``, each naming ``path``."""
    if not isinstance(schema, Mapping):
        return []
    if value is None and schema.get("nullable"):
        return []
    problems: list[Problem] = []
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options and all(check_value(value, opt, path) for opt in options):
            allowed = " or ".join(str(o.get("type", "schema")) for o in options)
            problems.append(_mismatch(f"{path} must be {allowed}, got {_type_name(value)}"))
    for sub in schema.get("allOf") or ():
        problems += check_value(value, sub, path)
    declared = schema.get("type")
    if declared is not None:
        types = declared if isinstance(declared, list) else [declared]
        if not any(_is(value, t) for t in types):
            want = " or ".join(map(str, types))
            return [*problems, _mismatch(f"{path} must be {want}, got {_type_name(value)}")]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(_mismatch(f"{path} must be one of {schema['enum']!r}, got {value!r}"))
    if "const" in schema and value != schema["const"]:
        problems.append(_mismatch(f"{path} must be {schema['const']!r}"))
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problems += check_value(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        problems += check_object(value, schema, path)
    return problems


def _mismatch(message: str) -> Problem:
    return ("type_mismatch", message)


def check_object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> list[Problem]:
    props: Mapping[str, Any] = schema.get("properties") or {}
    problems: list[Problem] = [
        _mismatch(f"{path}.{name} is required") if path
        else ("missing_parameter", f"parameter {name!r} is required")
        for name in schema.get("required") or ()
        if name not in value
    ]
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}.{name}" if path else f"parameter {name!r}"
        if name in props:
            problems += check_value(item, props[name], where)
        elif extra is False or (props and extra is True and not path):
            # Top level: a parameter the tool does not declare is a mistake even where the
            # schema leaves additionalProperties open; models invent parameters.
            problems.append(
                ("unknown_parameter", f"{where} is not a parameter of this tool") if not path
                else _mismatch(f"{where} is not allowed")
            )
        elif isinstance(extra, Mapping):
            problems += check_value(item, extra, where)
    return problems
