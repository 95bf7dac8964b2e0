"""The gateway's ASGI app: FastAPI, with plain-ASGI answers for the two hottest requests.

FastAPI spends several hundred Python calls of its own on every request: six middleware
layers (error pages, OpenTelemetry checks, body limits, exception handlers, exit stacks),
nested router matching, a dependency graph solved per request, each parameter validated
on its own. On a status poll that is more than the poll's whole work (a batched one-row
SELECT); on a submission, a large share.

`GatewayApp` answers the common, valid request of its hot routes (routes/jobs.py: `submit`
and `poll`) before all of that, with the same models and the same service code as the
FastAPI routes, under the same body size limit and request metrics. A request a hot route
cannot vouch for, it declines: it goes to the FastAPI app, body and all, which answers it
exactly as it would without the hot routes (a body that does not validate, a content type
FastAPI refuses, an oversized header). What the service raises (401, 403, 404, 409, 429,
503...) is answered by the app's own exception handlers. The FastAPI routes stay
registered: OpenAPI and /docs describe them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, Request, Response
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from conveyor_api import local_only
from conveyor_api.limits import BodySizeLimit
from conveyor_api.metrics import HANDED_ON, HttpMetrics

Answer = Callable[[Request], Awaitable[Response | None]]


class HotRoute:
    """One method and path answered by `answer`; `None` from it declines the request."""

    def __init__(self, method: str, path: str, answer: Answer) -> None:
        self.method = method
        self.path = path  # the template: request metrics are labelled with it
        self.path_regex: re.Pattern[str] = compile_path(path)[0]
        self.answer = answer

    def match(self, scope: Scope) -> dict[str, str] | None:
        """The path parameters when this route takes the request, else None."""
        if scope["method"] != self.method or scope.get("root_path"):
            return None  # behind a path prefix, leave the path handling to Starlette
        found = self.path_regex.match(scope["path"])
        return None if found is None else found.groupdict()


class GatewayApp(FastAPI):
    """The FastAPI app, with `hot_routes` answered ahead of its middleware and router."""

    hot_routes: Sequence[HotRoute] = ()
    # Set when authentication is off: requests from elsewhere are refused first (local_only).
    local_hosts: frozenset[str] | None = None

    def install_hot_routes(
        self, routes: Sequence[HotRoute], *, max_bytes: int, max_upload_bytes: int
    ) -> None:
        self.hot_routes = routes
        # The same limit and metrics as the app's own middleware (main.py) apply.
        self._hot_stack = HttpMetrics(BodySizeLimit(self._answer, max_bytes, max_upload_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.local_hosts is not None:
            refused = local_only.refusal(scope, self.local_hosts)
            if refused is not None:
                await refused(scope, receive, send)
                return
        if scope["type"] == "http":
            for route in self.hot_routes:
                path_params = route.match(scope)
                if path_params is not None:
                    scope.update(app=self, route=route, path_params=path_params)
                    await self._hot_stack(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: HotRoute = scope["route"]
        request = Request(scope, receive)
        try:
            response = await route.answer(request)
        except Exception as error:
            handler = self._exception_handler(error)
            if handler is None:
                raise
            response = await handler(request, error)
        if response is None:
            app_scope = dict(scope)
            scope[HANDED_ON] = True  # the app's own middleware counts it, not this stack's
            body = await request.body()
            await super().__call__(app_scope, _replaying(body, receive), send)
            return
        await response(scope, receive, send)

    def _exception_handler(
        self, error: Exception
    ) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        """The handler the app registered for the error's class or its nearest base."""
        for cls in type(error).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler  # type: ignore[return-value]
        return None


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
