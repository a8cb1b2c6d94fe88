"""The control API: loopback HTTP with a bearer token (``HOME/daemon.token``).

=======================================  ==========================================================
``GET  /health``                         liveness and queue counts (no token: it reveals no task)
``GET  /openapi.json``                   the OpenAPI 3.1 document of this API (no token)
``POST /jobs``                           submit ``{"task", "engine"?, "options"?}`` → 201 Job
``GET  /jobs``                           ``?status=&schedule=&limit=`` → ``{"jobs": [Job]}``
``GET  /jobs/{id}``                      a Job, with ``pending_budget`` (extension requests)
``GET  /jobs/{id}/events``               SSE: the job's events (``id:`` = sequence number;
                                         resumes after ``Last-Event-ID`` or ``?after=``), then an
                                         ``end`` event once the job is finished
``POST /jobs/{id}/cancel``               cancel (queued: at once; running: at once, committed
                                         steps kept) → Job
``POST /jobs/{id}/retry``                queue a stopped, budget-stopped, failed or cancelled
                                         job again: it resumes its session → Job
``POST /jobs/{id}/budget``               ``{"decision": "approve"|"deny", "amount"?, "reason"?}``
                                         decides the job's pending budget extension(s)
``GET  /schedules``                      every configured schedule with its state
``POST /budget/limits``                  ``{"scope", "usd"?, "tokens"?, "reason"?}``: a limit,
                                         as ``whalebone budget set`` (every front end)
``POST /schedules/{name}/resume``        restart a schedule its budget stopped
=======================================  ==========================================================

Errors are the JSON every whalebone endpoint answers (``{"error": {"message", "type", "param",
"code"}}``, from :mod:`whalebone.engine.serve.http`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from whalebone.agent.daemon.jobs import Job, JobError
from whalebone.agent.daemon.openapi import openapi_document
from whalebone.engine.serve.http import (
    ApiError,
    EventStream,
    check_bearer,
    exception_handlers,
    read_json_object,
)

if TYPE_CHECKING:
    from whalebone.agent.daemon.service import Daemon


def job_json(job: Job, pending: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = job.model_dump(mode="json")
    if pending is not None:
        data["pending_budget"] = pending
    return data


class ControlApi:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._book: Any = None

    def _auth(self, request: Request) -> None:
        check_bearer(request, self.daemon.token)

    def _job(self, jid: str) -> Job:
        try:
            return self.daemon.queue.get(jid)
        except JobError:
            raise ApiError(404, f"no job {jid!r}", code="not_found") from None

    def _decisions(self) -> Any:
        if self._book is None:
            from whalebone.budget.ledger import Ledger
            from whalebone.budget.records import DecisionBook

            self._book = DecisionBook(Ledger(self.daemon.config.ledger_path))
        return self._book

    def _pending(self, job: Job) -> list[Any]:
        if not job.session_id or not self.daemon.config.ledger_path.exists():
            return []
        return list(self._decisions().pending(job.session_id))

    # --- endpoints --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.daemon.health())

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def submit(self, request: Request) -> Response:
        self._auth(request)
        body = await read_json_object(request, max_bytes=1024 * 1024)
        unknown = sorted(set(body) - {"task", "engine", "options"})
        if unknown:
            raise ApiError(400, f"unknown fields {unknown}", param=unknown[0])
        if self.daemon.draining:
            raise ApiError(503, "the daemon is shutting down; submit again after its restart",
                           code="draining", headers={"Retry-After": "5"})
        options = body.get("options", {})
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise ApiError(400, "options must be an object", param="options")
        engine = body.get("engine") or ""
        if not isinstance(engine, str) or not self.daemon.config.allows_engine(engine):
            raise ApiError(400, f"engine {engine!r} is not among the daemon's engines (engine,"
                           " engines = [...] in its config)", param="engine",
                           code="engine_not_allowed")
        try:
            job = self.daemon.queue.submit(body.get("task"),  # type: ignore[arg-type]
                                           engine=body.get("engine") or "", options=options)
        except JobError as e:
            raise ApiError(400, str(e), param="task") from None
        self.daemon.log("job_submitted", job=job.id, via="api")
        self.daemon.wake()
        return JSONResponse(job_json(job), status_code=201)

    async def list_jobs(self, request: Request) -> Response:
        self._auth(request)
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be an integer", param="limit") from None
        jobs = self.daemon.queue.list(status=q.get("status"), schedule=q.get("schedule"),
                                      limit=limit)
        return JSONResponse({"jobs": [job_json(j) for j in jobs]})

    async def show(self, request: Request) -> Response:
        self._auth(request)
        job = self._job(request.path_params["id"])
        pending = [{"id": r.id, "scope": r.scope, "unit": r.unit, "max_step": r.max_step,
                    "needed": r.request.needed, "limit": r.request.limit,
                    "spent": r.request.spent} for r in self._pending(job)]
        return JSONResponse(job_json(job, pending))

    async def cancel(self, request: Request) -> Response:
        self._auth(request)
        self._job(request.path_params["id"])
        job = self.daemon.queue.cancel(request.path_params["id"])
        self.daemon.log("job_cancel_requested", job=job.id, status=job.status)
        return JSONResponse(job_json(job))

    async def retry(self, request: Request) -> Response:
        self._auth(request)
        self._job(request.path_params["id"])
        try:
            job = self.daemon.queue.retry(request.path_params["id"])
        except JobError as e:
            raise ApiError(409, str(e), code="not_retryable") from None
        self.daemon.log("job_retried", job=job.id, session=job.session_id or None)
        self.daemon.wake()
        return JSONResponse(job_json(job))

    async def budget(self, request: Request) -> Response:
        """A person's decision on the job's frozen budget extension (the same transaction as
        ``whalebone budget approve|deny``)."""
        self._auth(request)
        job = self._job(request.path_params["id"])
        body = await read_json_object(request, max_bytes=64 * 1024)
        decision = body.get("decision")
        if decision not in ("approve", "deny"):
            raise ApiError(400, "decision must be 'approve' or 'deny'", param="decision")
        reason = body.get("reason") or f"{decision}d through the daemon's API"
        if not isinstance(reason, str):
            raise ApiError(400, "reason must be text", param="reason")
        pending = self._pending(job)
        if not pending:
            raise ApiError(409, f"job {job.id} has no pending budget extension",
                           code="no_pending_request")
        from whalebone.budget.guard import clamp_amount
        from whalebone.budget.policy import Verdict
        from whalebone.core.errors import WhaleboneError

        decided = []
        for req in pending:
            try:
                amount = (clamp_amount(body.get("amount"), req.max_step)
                          if decision == "approve" else 0.0)
            except (WhaleboneError, TypeError):
                raise ApiError(400, "amount must be a positive number", param="amount"
                               ) from None
            verdict = Verdict(decision=decision, amount=amount, decider="human:api",
                              reason=reason)
            won = self._decisions().resolve(req.id, verdict)
            decided.append({"request": req.id, "scope": req.scope, "decision": decision,
                            "amount": amount, "unit": req.unit, "applied": won})
            self.daemon.log("budget_decision", job=job.id, session=job.session_id,
                            request=req.id, decision=decision, amount=amount, applied=won)
        return JSONResponse({"decided": decided})

    async def budget_limit(self, request: Request) -> Response:
        """A person's limit, as ``whalebone budget set``: it reaches the next call of every
        front end sharing the ledger."""
        self._auth(request)
        body = await read_json_object(request, max_bytes=64 * 1024)
        unknown = sorted(set(body) - {"scope", "usd", "tokens", "reason"})
        if unknown:
            raise ApiError(400, f"unknown fields {unknown}", param=unknown[0])
        scope, usd, tokens = body.get("scope"), body.get("usd"), body.get("tokens")
        if not isinstance(scope, str):
            raise ApiError(400, "scope must be text", param="scope")
        for name, value in (("usd", usd), ("tokens", tokens)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or (name == "tokens" and not isinstance(value, int))):
                raise ApiError(400, f"{name} must be a number", param=name)
        reason = body.get("reason") or "set through the daemon's API"
        if not isinstance(reason, str):
            raise ApiError(400, "reason must be text", param="reason")
        from whalebone.core.errors import WhaleboneError

        try:
            written, limit, family = self._decisions().set_limit(
                scope, usd=usd, tokens=tokens, decider="human:api", reason=reason[:500])
        except WhaleboneError as e:
            raise ApiError(400, str(e), param="scope") from None
        self.daemon.log("budget_limit", scope=written, max_usd=limit.max_usd,
                        max_tokens=limit.max_tokens)
        return JSONResponse({"scope": written, "family": family, "max_usd": limit.max_usd,
                             "max_tokens": limit.max_tokens})

    async def events(self, request: Request) -> Response:
        self._auth(request)
        job = self._job(request.path_params["id"])
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            after = int(raw)
        except ValueError:
            raise ApiError(400, "Last-Event-ID / after must be an integer", param="after"
                           ) from None
        queue, poll = self.daemon.queue, self.daemon.config.poll_s

        async def frames() -> AsyncIterator[bytes]:
            nonlocal after
            while True:
                terminal = queue.get(job.id).terminal  # read before the events: none missed
                for seq, event in queue.events(job.id, after):
                    after = seq
                    yield (f"id: {seq}\nevent: {event.get('type', 'event')}\ndata: "
                           f"{json.dumps(event, ensure_ascii=False)}\n\n").encode()
                if terminal:
                    final = job_json(queue.get(job.id))
                    yield f"event: end\ndata: {json.dumps(final, ensure_ascii=False)}\n\n" \
                        .encode()
                    return
                await anyio.sleep(poll)

        return EventStream(frames())

    async def schedules(self, request: Request) -> Response:
        self._auth(request)
        out = []
        for s in self.daemon.config.schedule:
            state = self.daemon.queue.schedule_state(s.name)
            out.append({**s.model_dump(mode="json"), "heartbeat": s.heartbeat,
                        "state": state.model_dump(mode="json")})
        return JSONResponse({"schedules": out})

    async def resume_schedule(self, request: Request) -> Response:
        self._auth(request)
        name = request.path_params["name"]
        if self.daemon.config.schedule_named(name) is None:
            raise ApiError(404, f"no schedule {name!r}", code="not_found")
        state = self.daemon.queue.resume_schedule(name)
        self.daemon.log("schedule_resumed", schedule=name)
        return JSONResponse(state.model_dump(mode="json"))


ROUTES = [
    ("/health", "health", ["GET"]),
    ("/openapi.json", "openapi", ["GET"]),
    ("/jobs", "submit", ["POST"]),
    ("/jobs", "list_jobs", ["GET"]),
    ("/jobs/{id}", "show", ["GET"]),
    ("/jobs/{id}/events", "events", ["GET"]),
    ("/jobs/{id}/cancel", "cancel", ["POST"]),
    ("/jobs/{id}/retry", "retry", ["POST"]),
    ("/jobs/{id}/budget", "budget", ["POST"]),
    ("/budget/limits", "budget_limit", ["POST"]),
    ("/schedules", "schedules", ["GET"]),
    ("/schedules/{name}/resume", "resume_schedule", ["POST"]),
]


def create_app(daemon: Daemon) -> Starlette:
    api = ControlApi(daemon)

    def internal(exc: Exception) -> None:
        daemon.log("api_error", level="error", message=f"{type(exc).__name__}: {exc}")

    routes = [Route(path, getattr(api, name), methods=methods) for path, name, methods in ROUTES]
    return Starlette(routes=routes, exception_handlers=exception_handlers(internal))
