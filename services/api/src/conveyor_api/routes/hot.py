"""Plain-ASGI routes for the two hottest requests: submit a job, poll a job.

FastAPI spends several hundred Python calls of its own on every request it routes:
nested router matching, a dependency graph solved per request, each parameter validated
on its own, a request object per level. On a status poll that is more than the poll's
whole work (a batched one-row SELECT); on a submission, most of it.

These routes answer the common, valid request directly, with the same models and the
same service code as the FastAPI routes (`accept` and `job_state` in routes/jobs.py).
A request they cannot vouch for, they decline: it goes on, body and all, to the FastAPI
route behind them, which answers it exactly as it would without them (a body that does
not validate, a content type FastAPI refuses, an oversized header). What the service
raises (401, 403, 404, 429, 503...) reaches the app's exception handlers as from any
route. The FastAPI routes stay registered: OpenAPI and /docs describe them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import TypeAdapter, ValidationError
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor_api.auth import authenticate
from conveyor_api.ratelimit import submitter
from conveyor_api.routes.jobs import IDEMPOTENCY_KEY_MAX_LENGTH, accept, job_state
from conveyor_api.schemas import JobSubmission

DECLINED = "conveyor.hot_route_declined"  # scope key: let the FastAPI route answer

Answer = Callable[[Request], Awaitable[Response | None]]

_SUBMISSION: TypeAdapter[Any] = TypeAdapter(JobSubmission)
_JOB_ID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)


class HotRoute(BaseRoute):
    """One method and path answered by `answer`; `None` from it declines the request.

    A declined request goes back through the app's router with the hot routes skipped,
    its body replayed, so FastAPI sees it as if these routes did not exist.
    """

    def __init__(self, method: str, path: str, answer: Answer, router: ASGIApp) -> None:
        self.method = method
        self.path = path  # the template: the metrics middleware labels requests by it
        self.path_regex, _, _ = compile_path(path)
        self.answer = answer
        self.router = router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method or DECLINED in scope:
            return Match.NONE, {}
        found = self.path_regex.match(get_route_path(scope))
        if found is None:
            return Match.NONE, {}
        return Match.FULL, {"route": self, "path_params": found.groupdict()}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.answer(request)
        if response is not None:
            await response(scope, receive, send)
            return
        scope[DECLINED] = True
        await self.router(scope, _replaying(await request.body(), receive), send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NotImplementedError("hot routes are not named; use the FastAPI route's name")


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the body already read, then the connection's messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _is_json(content_type: str | None) -> bool:
    # Only the plain spellings; anything else is FastAPI's to judge.
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def submit(request: Request) -> Response | None:
    """POST /v1/jobs."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        return None
    if not _is_json(request.headers.get("content-type")):
        return None
    try:
        submission = _SUBMISSION.validate_json(await request.body())
    except ValidationError:
        return None  # FastAPI authenticates first, then reports the body's errors
    # After the body: a declined request must not have spent a rate-limit token already.
    return await accept(request, submission, await submitter(request), idempotency_key)


async def poll(request: Request) -> Response | None:
    """GET /v1/jobs/{job_id}."""
    try:
        job_id = _JOB_ID.validate_python(request.path_params["job_id"])
    except ValidationError:
        return None
    return await job_state(request, job_id, await authenticate(request))


def install_hot_routes(app: FastAPI) -> None:
    """Put the hot routes in front of every other route of the app."""
    app.router.routes[:0] = [
        HotRoute("POST", "/v1/jobs", submit, app.router),
        HotRoute("GET", "/v1/jobs/{job_id}", poll, app.router),
    ]
