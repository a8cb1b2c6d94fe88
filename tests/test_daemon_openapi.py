"""The control API's OpenAPI document: well-formed, every reference resolves, and its job
shapes agree with what the queue accepts and returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from whalebone.agent.daemon.jobs import JOB_OPTIONS, TERMINAL, Job, JobQueue
from whalebone.agent.daemon.openapi import JOB_STATUSES, openapi_document


def refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def validator(name: str) -> Draft202012Validator:
    doc = openapi_document()
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": doc["components"]})


def test_every_schema_is_valid_and_every_reference_resolves() -> None:
    doc = openapi_document()
    json.dumps(doc)  # plain JSON
    schemas = doc["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"], path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path


def test_job_statuses_and_options_match_the_queue() -> None:
    assert set(JOB_STATUSES) == set(Job.model_fields["status"].annotation.__args__)
    assert set(TERMINAL) < set(JOB_STATUSES)
    submit = openapi_document()["components"]["schemas"]["Submit"]
    assert set(submit["properties"]["options"]["properties"]) == set(JOB_OPTIONS)


def test_a_stored_job_validates_against_the_job_schema(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "jobs.db")
    job = q.submit("t", options={"thinking": "chat"})
    validator("Job").validate(job.model_dump(mode="json"))
    q.claim()
    q.finish(job.id, "done", reason="answer", answer="a", steps=1)
    validator("Job").validate(q.get(job.id).model_dump(mode="json"))


@pytest.mark.parametrize("body", [{"task": ""}, {"task": "x", "colour": 1},
                                  {"task": "x", "options": {"max_steps": 0}}])
def test_the_submit_schema_refuses_what_the_queue_refuses(tmp_path: Path, body: dict) -> None:
    with pytest.raises(ValidationError):
        validator("Submit").validate(body)


def test_the_job_and_schedule_state_schemas_are_the_models_own() -> None:
    from whalebone.agent.daemon.jobs import ScheduleState

    schemas = openapi_document()["components"]["schemas"]
    job = schemas["Job"]
    assert set(job["properties"]) == set(Job.model_fields) | {"pending_budget"}
    assert set(job["required"]) == set(Job.model_fields)  # a response carries every field
    assert job["properties"]["status"]["enum"] == JOB_STATUSES
    assert set(schemas["ScheduleState"]["properties"]) == set(ScheduleState.model_fields)
