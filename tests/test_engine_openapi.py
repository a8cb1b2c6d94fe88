"""The OpenAPI document itself: well-formed, every reference resolves, schemas are valid.
(That the server's real answers conform to it is tested in test_engine_server.py.)"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from whalebone.engine.serve.openapi import openapi_document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves_and_every_schema_is_valid() -> None:
    doc = openapi_document("deepseek-v4-flash")
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert "deepseek-v4-flash" in doc["info"]["description"]
    json.dumps(doc)  # serialisable as served


def test_every_operation_documents_its_errors_with_the_error_schema() -> None:
    doc = openapi_document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (path, method)
            for status, response in op["responses"].items():
                if status != "200":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "429", "503"} <= set(chat)
