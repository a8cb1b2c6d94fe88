"""Pieces of OpenAPI 3.1 documents, shared by ``whalebone serve`` and the daemon's control API.

A schema for a body that has a pydantic model is generated from it (:func:`model_schemas`), so
the document and the code cannot describe two different shapes; hand-written schemas (the
OpenAI-compatible chat bodies, which no model holds) use the small helpers below.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/"
STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF + name}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def json_body(schema: str) -> dict[str, Any]:
    """A JSON request or response body of the component schema ``schema``."""
    return {"content": {"application/json": {"schema": ref(schema)}}}


def model_schemas(*models: type[BaseModel], all_required: bool = True) -> dict[str, Any]:
    """Component schemas for ``models`` (and the models they refer to), named as the classes
    are. A response always carries every field, so with ``all_required`` each field is
    required; field descriptions come from ``Field(description=…)``."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(mode="serialization", ref_template=REF + "{model}")
        for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if all_required and "properties" in sub:
                sub["required"] = list(sub["properties"])
            out[name] = sub
    return out
