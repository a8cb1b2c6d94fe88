"""The OpenAPI 3.1 document of the daemon's control API (``GET /openapi.json``).

The job and schedule-state schemas are generated from their pydantic models (``Job``,
``ScheduleState``); the request bodies and small envelopes are written beside the API. The
tests check that its paths and methods are exactly the routes the app serves and validate real
responses against its schemas, so the document and the API cannot drift apart.
"""

from __future__ import annotations

from typing import Any, get_args

from whalebone.agent.daemon.jobs import Job, JobStatus, ScheduleState
from whalebone.core.openapi import INT as _INT
from whalebone.core.openapi import NUM as _NUM
from whalebone.core.openapi import STR as _STR
from whalebone.core.openapi import json_body as _json
from whalebone.core.openapi import model_schemas
from whalebone.core.openapi import nullable as _nullable
from whalebone.core.openapi import ref as _ref
from whalebone.engine.serve.openapi import SCHEMAS as ENGINE_SCHEMAS

JOB_STATUSES = list(get_args(JobStatus))

_MODELS = model_schemas(Job, ScheduleState)
# GET /jobs/{id} adds the job's pending budget extensions (not a column of the queue).
_MODELS["Job"]["properties"]["pending_budget"] = {"type": "array",
                                                  "items": _ref("PendingBudget")}

SCHEMAS: dict[str, Any] = {
    "Error": ENGINE_SCHEMAS["Error"],  # every whalebone endpoint fails the same way
    **_MODELS,
    "PendingBudget": {
        "type": "object", "required": ["id", "scope", "unit", "max_step"],
        "properties": {"id": _STR, "scope": _STR, "unit": {"enum": ["usd", "tokens"]},
                       "max_step": _NUM, "needed": _NUM, "limit": _NUM, "spent": _NUM}},
    "JobList": {"type": "object", "required": ["jobs"],
                "properties": {"jobs": {"type": "array", "items": _ref("Job")}}},
    "Submit": {
        "type": "object", "required": ["task"], "additionalProperties": False,
        "properties": {"task": {**_STR, "minLength": 1},
                       "engine": {**_STR, "description": "one of the daemon's engines "
                                  "(its config's engine or engines); empty: its default"},
                       "options": {"type": "object", "additionalProperties": False,
                                   "properties": {"max_steps": {**_INT, "minimum": 1},
                                                  "thinking": {"enum": ["chat", "thinking",
                                                                        "max"]}}}}},
    "BudgetDecision": {
        "type": "object", "required": ["decision"],
        "properties": {"decision": {"enum": ["approve", "deny"]},
                       "amount": {**_NUM, "exclusiveMinimum": 0, "description": "in the "
                                  "request's unit; default and maximum: the policy's step"},
                       "reason": _STR}},
    "BudgetDecided": {
        "type": "object", "required": ["decided"],
        "properties": {"decided": {"type": "array", "items": {
            "type": "object", "required": ["request", "scope", "decision", "amount", "unit",
                                           "applied"],
            "properties": {"request": _STR, "scope": _STR,
                           "decision": {"enum": ["approve", "deny"]}, "amount": _NUM,
                           "unit": _STR, "applied": {"type": "boolean"}}}}}},
    "BudgetLimit": {
        "type": "object", "required": ["scope"], "additionalProperties": False,
        "properties": {"scope": {**_STR, "description": "global | day | agent:NAME | "
                                 "session:ID | run:ID | schedule:NAME | run | session | agent "
                                 "(see whalebone budget set --help)"},
                       "usd": {**_NUM, "minimum": 0}, "tokens": {**_INT, "minimum": 0},
                       "reason": _STR}},
    "BudgetLimitSet": {
        "type": "object", "required": ["scope", "family", "max_usd", "max_tokens"],
        "properties": {"scope": _STR, "family": {"type": "boolean"},
                       "max_usd": {"type": ["number", "null"]},
                       "max_tokens": {"type": ["integer", "null"]}}},
    "Health": {
        "type": "object", "required": ["status", "pid", "running", "queued", "concurrency"],
        "properties": {"status": {"enum": ["ok", "draining"]}, "pid": _INT,
                       "uptime_s": _NUM, "concurrency": _INT, "running": _INT, "queued": _INT,
                       "jobs": {"type": "object", "additionalProperties": _INT},
                       "schedules": _INT}},
    "Schedule": {
        "type": "object", "required": ["name", "task", "heartbeat", "state"],
        "properties": {"name": _STR, "task": _STR, "every": _nullable(_NUM),
                       "cron": _nullable(_STR), "watch": {"type": "array", "items": _STR},
                       "check": _nullable(_STR), "heartbeat": {"type": "boolean"},
                       "state": _ref("ScheduleState")}},
    "ScheduleList": {"type": "object", "required": ["schedules"],
                     "properties": {"schedules": {"type": "array",
                                                  "items": _ref("Schedule")}}},
}


def _ok(schema: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, **_json(schema)}


_ERRORS = {"401": {"description": "missing or wrong bearer token", **_json("Error")},
           "404": {"description": "no such job", **_json("Error")}}
_ID = [{"name": "id", "in": "path", "required": True, "schema": _STR}]
_SECURE = [{"bearer": []}]


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "liveness and queue counts", "security": [],
                            "responses": {"200": _ok("Health")}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/jobs": {
            "post": {"summary": "submit a job", "requestBody": {"required": True,
                                                                **_json("Submit")},
                     "responses": {"201": _ok("Job", "queued"),
                                   "400": {"description": "bad job", **_json("Error")},
                                   "401": _ERRORS["401"],
                                   "503": {"description": "shutting down", **_json("Error")}}},
            "get": {"summary": "jobs, most recent first",
                    "parameters": [{"name": n, "in": "query", "required": False,
                                    "schema": s} for n, s in
                                   (("status", {"enum": JOB_STATUSES}), ("schedule", _STR),
                                    ("limit", _INT))],
                    "responses": {"200": _ok("JobList"), "401": _ERRORS["401"]}}},
        "/jobs/{id}": {"get": {"summary": "a job, with its pending budget extensions",
                               "parameters": _ID,
                               "responses": {"200": _ok("Job"), **_ERRORS}}},
        "/jobs/{id}/events": {"get": {
            "summary": "the job's events as server-sent events",
            "description": "Each event's id is its sequence number; reconnect with "
                           "Last-Event-ID (or ?after=N) to resume. Event names are the agent's "
                           "event types (step, usage, tool_call, tool_result, warning, "
                           "compacted, done; reasoning and text are coalesced per model "
                           "call). A final 'end' event carries the finished Job.",
            "parameters": [*_ID, {"name": "after", "in": "query", "required": False,
                                  "schema": _INT}],
            "responses": {"200": {"description": "event stream",
                                  "content": {"text/event-stream": {"schema": _STR}}},
                          **_ERRORS}}},
        "/jobs/{id}/cancel": {"post": {"summary": "cancel a job", "parameters": _ID,
                                       "responses": {"200": _ok("Job"), **_ERRORS}}},
        "/jobs/{id}/retry": {"post": {
            "summary": "queue a stopped, budget-stopped, failed or cancelled job again; it "
                       "resumes its session where it stopped", "parameters": _ID,
            "responses": {"200": _ok("Job"),
                          "409": {"description": "done, queued or running", **_json("Error")},
                          **_ERRORS}}},
        "/jobs/{id}/budget": {"post": {
            "summary": "approve or deny the job's pending budget extension", "parameters": _ID,
            "requestBody": {"required": True, **_json("BudgetDecision")},
            "responses": {"200": _ok("BudgetDecided"),
                          "400": {"description": "bad decision", **_json("Error")},
                          "409": {"description": "nothing pending", **_json("Error")},
                          **_ERRORS}}},
        "/budget/limits": {"post": {
            "summary": "set a budget limit (as whalebone budget set): it applies to the next "
                       "model call of every front end",
            "requestBody": {"required": True, **_json("BudgetLimit")},
            "responses": {"200": _ok("BudgetLimitSet"),
                          "400": {"description": "bad scope or limit", **_json("Error")},
                          **_ERRORS}}},
        "/schedules": {"get": {"summary": "schedules and their state",
                               "responses": {"200": _ok("ScheduleList"),
                                             "401": _ERRORS["401"]}}},
        "/schedules/{name}/resume": {"post": {
            "summary": "restart a schedule its budget stopped",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STR}],
            "responses": {"200": _ok("ScheduleState"), **_ERRORS}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "whalebone daemon control API", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8765"}],
        "security": _SECURE,
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "HOME/daemon.token"}}},
    }
