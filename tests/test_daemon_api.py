"""The control API over real HTTP against a daemon subprocess: bearer auth, errors as JSON,
the OpenAPI document matching the routes and the responses, SSE with resumption, cancelling,
and a frozen job's budget extension approved or denied."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from daemon_kit import DaemonProc, appends, wait_for, write_config, write_script
from jsonschema import Draft202012Validator

from whalebone.agent.daemon.api import ROUTES
from whalebone.agent.daemon.openapi import openapi_document
from whalebone.dsml import emit_completion


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    home = tmp_path_factory.mktemp("api") / "home"
    home.mkdir()
    engine = write_script(home / "answer.json", [emit_completion("Hello.", reasoning="hi")])
    write_script(home / "three.json", appends(3, "Three lines."))
    # Turns reserve their prompt plus 65 output tokens: one turn fits a run's 700-token
    # limit, the second does not, and the run freezes until a person decides.
    write_config(home, engine=engine, concurrency=2, engines=[
        f"replay:{home / 'three.json'}", "bundled:/nonexistent/checkpoint"], tables={
        "agent": {"date_in_task": False, "max_tokens": 64},
        "budget": {"run_tokens": 700, "on_cap": "human", "max_step_tokens": 5000}})
    d = DaemonProc(home)
    yield d
    d.stop()


def validate(instance: object, schema: str) -> None:
    doc = openapi_document()
    Draft202012Validator({"$ref": f"#/components/schemas/{schema}",
                          "components": doc["components"]}).validate(instance)


def test_health_needs_no_token_and_every_other_endpoint_does(daemon: DaemonProc) -> None:
    r = httpx.get(daemon.url + "/health")
    assert r.status_code == 200
    validate(r.json(), "Health")
    for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x"),
                         ("GET", "/jobs/x/events"), ("POST", "/jobs/x/cancel"),
                         ("POST", "/jobs/x/budget"), ("POST", "/jobs/x/retry"),
                         ("GET", "/schedules"),
                         ("POST", "/schedules/x/resume")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            r = httpx.request(method, daemon.url + path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            validate(r.json(), "Error")
            assert r.json()["error"]["code"] == "invalid_api_key"


def test_the_token_file_is_private(daemon: DaemonProc) -> None:
    assert (daemon.home / "daemon.token").stat().st_mode & 0o777 == 0o600


def test_the_openapi_document_lists_exactly_the_served_routes(daemon: DaemonProc) -> None:
    doc = daemon.client.get("/openapi.json").json()
    assert doc == openapi_document()
    served = {(path, m.lower()) for path, _, methods in ROUTES for m in methods}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    assert doc["openapi"].startswith("3.1")


def test_a_job_runs_and_its_events_stream_as_sse_resumable_by_id(daemon: DaemonProc) -> None:
    job = daemon.submit("Say hello.", options={"max_steps": 5})
    validate(job, "Job")
    with daemon.client.stream("GET", f"/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = "".join(r.iter_text()).strip().split("\n\n")
    parsed = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        parsed.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    names = [name for _, name, _ in parsed]
    assert names[0] == "step" and names[-2:] == ["done", "end"]
    assert "usage" in names and "text" in names
    end = parsed[-1][2]
    validate(end, "Job")
    assert end["status"] == "done" and end["answer"] == "Hello."
    text = next(data for _, name, data in parsed if name == "text")
    assert text["text"] == "Hello."  # deltas coalesced into one event per step
    # Reconnecting after the usage event replays only what came after it.
    usage_id = next(i for i, name, _ in parsed if name == "usage")
    with daemon.client.stream("GET", f"/jobs/{job['id']}/events",
                              headers={"Last-Event-ID": usage_id}) as r:
        again = "".join(r.iter_text())
    assert "event: usage" not in again and "event: done" in again
    listed = daemon.client.get("/jobs", params={"status": "done"}).json()
    validate(listed, "JobList")
    assert job["id"] in [j["id"] for j in listed["jobs"]]


@pytest.mark.parametrize("body, param", [
    ({"task": ""}, "task"), ({"task": 3}, "task"), ({}, "task"),
    ({"task": "x", "colour": "red"}, "colour"), ({"task": "x", "options": []}, "options"),
    ({"task": "x", "options": {"temperature": 2}}, "task")])
def test_bad_submissions_are_refused_with_a_clear_error(daemon: DaemonProc, body: dict,
                                                        param: str) -> None:
    before = len(daemon.client.get("/jobs").json()["jobs"])
    r = daemon.client.post("/jobs", json=body)
    assert r.status_code == 400
    validate(r.json(), "Error")
    assert r.json()["error"]["param"] == param
    assert len(daemon.client.get("/jobs").json()["jobs"]) == before  # nothing queued


def test_not_json_unknown_jobs_and_endpoints_answer_error_json(daemon: DaemonProc) -> None:
    r = daemon.client.post("/jobs", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    for path in ("/jobs/nope", "/jobs/nope/events"):
        r = daemon.client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert daemon.client.post("/jobs/nope/cancel").status_code == 404
    assert daemon.client.post("/jobs/nope/retry").status_code == 404
    r = daemon.client.get("/nowhere")
    assert r.status_code == 404
    validate(r.json(), "Error")
    r = daemon.client.post("/schedules/none/resume")
    assert r.status_code == 404


def test_a_job_may_name_only_the_daemons_engines(daemon: DaemonProc) -> None:
    before = len(daemon.client.get("/jobs").json()["jobs"])
    for spec in ("openai:https://attacker.example/v1", "replay:/etc/passwd", 7):
        r = daemon.client.post("/jobs", json={"task": "x", "engine": spec})
        assert r.status_code == 400 and r.json()["error"]["code"] == "engine_not_allowed"
    assert len(daemon.client.get("/jobs").json()["jobs"]) == before


def test_a_job_on_an_engine_that_cannot_open_fails_and_says_why(daemon: DaemonProc) -> None:
    job = daemon.submit("x", engine="bundled:/nonexistent/checkpoint")
    done = daemon.wait_job(job["id"])
    assert done["status"] == "failed" and done["reason"] == "no_engine"
    assert "bundled:/nonexistent/checkpoint" in done["message"]


def test_cancelling_a_job_frozen_at_its_budget_stops_it_and_withdraws_the_request(
        daemon: DaemonProc) -> None:
    three = f"replay:{daemon.home / 'three.json'}"
    job = daemon.submit("Append three lines.", engine=three)
    wait_for(lambda: daemon.job(job["id"])["pending_budget"], 60, "a pending extension")
    r = daemon.client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel"] is True
    done = daemon.wait_job(job["id"])
    assert done["status"] == "cancelled" and done["pending_budget"] == []
    assert done["steps"] == 1 and done["session_id"]
    from whalebone.agent.store import SessionStore

    store = SessionStore(daemon.home / "sessions.db")
    kept = [m["role"] for m in store.messages(done["session_id"])]
    assert kept == ["system", "user", "assistant", "tool"]  # the first step stays committed
    store.close()


def test_a_frozen_jobs_budget_extension_is_approved_over_the_api(daemon: DaemonProc) -> None:
    three = f"replay:{daemon.home / 'three.json'}"
    job = daemon.submit("Append three lines.", engine=three)
    frozen = wait_for(lambda: (j := daemon.job(job["id"]))["pending_budget"] and j, 60,
                      "a pending budget extension")
    validate(frozen, "Job")
    assert frozen["status"] == "running"
    pending = frozen["pending_budget"][0]
    assert pending["scope"].startswith("run:") and pending["unit"] == "tokens"
    bad = daemon.client.post(f"/jobs/{job['id']}/budget", json={"decision": "maybe"})
    assert bad.status_code == 400
    r = daemon.client.post(f"/jobs/{job['id']}/budget",
                           json={"decision": "approve", "amount": 5000, "reason": "fine"})
    assert r.status_code == 200
    validate(r.json(), "BudgetDecided")
    assert r.json()["decided"][0]["applied"] is True
    done = daemon.wait_job(job["id"])
    assert done["status"] == "done" and done["answer"] == "Three lines."
    again = daemon.client.post(f"/jobs/{job['id']}/budget", json={"decision": "deny"})
    assert again.status_code == 409  # nothing is pending any more


def test_a_denied_extension_ends_the_job_with_the_budget_reason(daemon: DaemonProc) -> None:
    three = f"replay:{daemon.home / 'three.json'}"
    job = daemon.submit("Append three lines.", engine=three)
    wait_for(lambda: daemon.job(job["id"])["pending_budget"], 60, "a pending extension")
    r = daemon.client.post(f"/jobs/{job['id']}/budget",
                           json={"decision": "deny", "reason": "not today"})
    assert r.status_code == 200
    done = daemon.wait_job(job["id"])
    assert done["status"] == "budget" and "not today" in done["message"]
    # Retried, it resumes its session, freezes at the same cap again, and can be approved.
    r = daemon.client.post(f"/jobs/{job['id']}/retry")
    assert r.status_code == 200
    validate(r.json(), "Job")
    wait_for(lambda: daemon.job(job["id"])["pending_budget"], 60, "the cap again")
    daemon.client.post(f"/jobs/{job['id']}/budget", json={"decision": "approve"})
    again = daemon.wait_job(job["id"])
    assert again["status"] == "done" and again["session_id"] == done["session_id"]
    r = daemon.client.post(f"/jobs/{job['id']}/retry")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_retryable"


def test_deep_json_is_a_400_and_the_connection_stays_usable(daemon: DaemonProc) -> None:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(daemon.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}
    for depth in (100, 100_000):
        deep = b'{"task": "x", "options": ' + b"[" * depth + b"]" * depth + b"}"
        conn.request("POST", "/jobs", body=deep, headers=headers)
        r = conn.getresponse()
        error = json.loads(r.read())["error"]
        assert r.status == 400 and error["code"] == "json_too_deep", error
        sock = conn.sock
        conn.request("GET", "/jobs?limit=1", headers=headers)
        r = conn.getresponse()
        assert r.status == 200, r.read()
        r.read()
        assert conn.sock is sock
    conn.close()
