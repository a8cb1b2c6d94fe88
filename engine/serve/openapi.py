"""The OpenAPI 3.1 document of ``whalebone serve`` (served at ``GET /openapi.json``).

Written by hand next to the server: the OpenAI-compatible bodies have no pydantic model to
generate them from (the shared pieces are in :mod:`whalebone.core.openapi`); the server's tests
validate real responses against these schemas, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from whalebone.core.openapi import INT as _INT
from whalebone.core.openapi import STR as _STR
from whalebone.core.openapi import nullable as _nullable
from whalebone.core.openapi import ref as _ref

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": _STR, "type": _STR, "param": _nullable(_STR),
                           "code": _nullable(_STR)}}}},
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens",
                     "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"],
        "properties": {
            "prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT,
            "prompt_cache_hit_tokens": {**_INT, "description": "prompt tokens served from the "
                                        "engine's prefix cache"},
            "prompt_cache_miss_tokens": _INT,
            "prompt_tokens_details": {"type": "object",
                                      "properties": {"cached_tokens": _INT}}}},
    "ServedBy": {
        "type": "object", "required": ["engine", "notes"],
        "description": "whalebone's extension: the engine that answered and its notes, e.g. a "
                       "router's failover or 'the cache starts cold'",
        "properties": {"engine": _STR, "notes": {"type": "array", "items": _STR}}},
    "ToolCall": {
        "type": "object", "required": ["id", "type", "function"],
        "properties": {"id": _STR, "type": {"const": "function"},
                       "function": {"type": "object", "required": ["name", "arguments"],
                                    "properties": {"name": _STR, "arguments": {
                                        **_STR, "description": "JSON object text"}}}}},
    "Message": {
        "type": "object", "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
            "content": _nullable({"anyOf": [_STR, {"type": "array", "items": {
                "type": "object", "required": ["type", "text"],
                "properties": {"type": {"const": "text"}, "text": _STR}}}]}),
            "reasoning_content": {**_nullable(_STR), "description": "required on assistant "
                                  "messages with tool_calls in thinking mode"},
            "tool_calls": {"type": "array", "items": _ref("ToolCall")},
            "tool_call_id": {**_STR, "description": "required on tool messages"}}},
    "Tool": {
        "type": "object", "required": ["type", "function"],
        "properties": {"type": {"const": "function"}, "function": {
            "type": "object", "required": ["name"],
            "properties": {"name": _STR, "description": _STR,
                           "parameters": {"type": "object"}}}}},
    "SamplingFields": {
        "type": "object", "required": ["model"],
        "properties": {
            "model": {**_STR, "description": "any name; the server's model answers"},
            "max_tokens": {**_INT, "minimum": 1, "default": 4096},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "seed": _INT,
            "stop": {"anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 16}]},
            "n": {"const": 1},
            "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object",
                               "properties": {"include_usage": {"type": "boolean"}}},
            "user": {**_STR, "description": "session id: keeps a session on one engine"}}},
    "ChatRequest": {
        "allOf": [_ref("SamplingFields"), {
            "type": "object", "required": ["messages"],
            "properties": {
                "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
                "tools": {"type": "array", "items": _ref("Tool")},
                "tool_choice": {"anyOf": [
                    {"enum": ["none", "auto", "required"]},
                    {"type": "object", "required": ["type", "function"],
                     "properties": {"type": {"const": "function"},
                                    "function": {"type": "object", "required": ["name"],
                                                 "properties": {"name": _STR}}}}],
                    "description": "'required' and named functions are refused in thinking "
                                   "mode; 'none' hides the tools from the model"},
                "thinking": {"type": "object", "properties": {
                    "type": {"enum": ["enabled", "disabled"], "default": "enabled"}}},
                "reasoning_effort": {"enum": ["minimal", "low", "medium", "high", "xhigh",
                                              "max", "ultra"],
                                     "description": "mapped to V4's high or max as DeepSeek "
                                                    "maps it"}}}]},
    "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": _STR, "object": {"const": "chat.completion"}, "created": _INT, "model": _STR,
            "system_fingerprint": _STR,
            "choices": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object", "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": _INT,
                    "finish_reason": {"enum": ["stop", "length", "tool_calls"]},
                    "message": {
                        "type": "object", "required": ["role", "content"],
                        "properties": {"role": {"const": "assistant"}, "content": _STR,
                                       "reasoning_content": _nullable(_STR),
                                       "tool_calls": {"type": "array",
                                                      "items": _ref("ToolCall")}}}}}},
            "usage": _ref("Usage"), "whalebone": _ref("ServedBy")}},
    "ChatCompletionChunk": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "description": "one SSE 'data:' line; the stream ends with 'data: [DONE]'. The last "
                       "chunk carries finish_reason and usage. An error after the stream "
                       "began arrives as one Error object instead.",
        "properties": {
            "id": _STR, "object": {"const": "chat.completion.chunk"}, "created": _INT,
            "model": _STR, "system_fingerprint": _STR, "usage": _ref("Usage"),
            "whalebone": _ref("ServedBy"),
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "delta"],
                "properties": {
                    "index": _INT,
                    "finish_reason": _nullable({"enum": ["stop", "length", "tool_calls"]}),
                    "delta": {"type": "object", "properties": {
                        "role": {"const": "assistant"}, "content": _STR,
                        "reasoning_content": _STR,
                        "tool_calls": {"type": "array", "items": {
                            "type": "object", "required": ["index"],
                            "properties": {"index": _INT, "id": _STR,
                                           "type": {"const": "function"},
                                           "function": {"type": "object", "properties": {
                                               "name": _STR, "arguments": _STR}}}}}}}}}}}},
    "CompletionRequest": {
        "allOf": [_ref("SamplingFields"), {
            "type": "object", "required": ["prompt"],
            "properties": {"prompt": {
                "anyOf": [{**_STR, "minLength": 1},
                          {"type": "array", "items": {**_INT, "minimum": 0}, "minItems": 1}],
                "description": "the exact V4 prompt (special tokens included), or token ids"}}}]},
    "Completion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "description": "the whole answer, or (streaming) one SSE chunk of it; the last chunk "
                       "carries finish_reason and usage",
        "properties": {
            "id": _STR, "object": {"const": "text_completion"}, "created": _INT, "model": _STR,
            "system_fingerprint": _STR, "usage": _ref("Usage"), "whalebone": _ref("ServedBy"),
            "choices": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object", "required": ["index", "text", "finish_reason"],
                "properties": {"index": _INT, "text": _STR,
                               "finish_reason": _nullable({"enum": ["stop", "length"]})}}}}},
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object"],
            "properties": {"id": _STR, "object": {"const": "model"}, "owned_by": _STR,
                           "context_window": _INT}}}}},
    "Health": {
        "type": "object", "required": ["status", "running", "queued"],
        "properties": {"status": {"const": "ok"}, "engine": _STR, "model": _STR,
                       "running": _INT, "queued": _INT, "queue_limit": _INT, "served": _INT,
                       "cancelled": _INT}},
}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {400: "malformed request (message and param say what)",
               401: "missing or wrong bearer key",
               403: "a Host or Origin that is not this server's (web pages are kept out)",
               413: "the body is over the server's cap (--max-body-mb)",
               415: "a POST whose Content-Type is not JSON",
               429: "the engine is busy and the queue is full (Retry-After)",
               499: "the client closed the request (never seen by that client)",
               500: "the engine failed", 502: "the engine refused the server's credentials",
               503: "the engine is unavailable"}
    return {str(c): {"description": meaning[c], "content": {
        "application/json": {"schema": _ref("Error")}}} for c in codes}


def _post(summary: str, request: str, response: str, stream: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref(request)}}},
        "responses": {
            "200": {"description": "the answer; with stream=true, server-sent events",
                    "content": {"application/json": {"schema": _ref(response)},
                                "text/event-stream": {"schema": _ref(stream)}}},
            **_errors(400, 401, 403, 413, 415, 429, 499, 500, 502, 503)}}}


def openapi_document(model: str = "whalebone-local") -> dict[str, Any]:
    """The document, naming the model this server answers with."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "whalebone serve", "version": "1",
                 "description": f"DeepSeek-compatible API over a whalebone engine ({model})."},
        "paths": {
            "/v1/chat/completions": _post("Chat completion (DeepSeek/OpenAI shape)",
                                          "ChatRequest", "ChatCompletion",
                                          "ChatCompletionChunk"),
            "/v1/completions": _post("Raw completion of an exact V4 prompt",
                                     "CompletionRequest", "Completion", "Completion"),
            "/v1/models": {"get": {"summary": "The model served",
                                   "security": [{"bearer": []}],
                                   "responses": {"200": {"description": "models", "content": {
                                       "application/json": {"schema": _ref("ModelList")}}},
                                       **_errors(401, 403)}}},
            "/health": {"get": {"summary": "Liveness and queue depth (no key needed)",
                                "responses": {"200": {"description": "ok", "content": {
                                    "application/json": {"schema": _ref("Health")}},
                                    **_errors(403)}}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "only when the server has a key"}}},
    }
