"""Gateway metrics: HTTP traffic by route template, submissions, rejections, publishing."""

from __future__ import annotations

import time

from conveyor_core.metrics import REQUEST_SECONDS_BUCKETS
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "conveyor_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "conveyor_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["route", "method"],
    buckets=REQUEST_SECONDS_BUCKETS,
)
JOBS_SUBMITTED = Counter("conveyor_jobs_submitted_total", "Jobs accepted (202).", ["type"])
SUBMISSIONS_REJECTED = Counter(
    "conveyor_submissions_rejected_total",
    "Job submissions refused, by reason (validation, forbidden, limit, broker_unavailable, "
    "store_unavailable, idempotency_conflict, auth, rate_limited).",
    ["reason"],
)
PUBLISH_SECONDS = Histogram(
    "conveyor_publish_duration_seconds",
    "Publish to RabbitMQ until its confirm.",
    ["type"],
    buckets=REQUEST_SECONDS_BUCKETS,
)
BROKER_CONNECTED = Gauge("conveyor_gateway_broker_connected", "1 while RabbitMQ is connected.")
EVENT_STREAMS_OPEN = Gauge(
    "conveyor_event_streams_open",
    "Event streams (GET /v1/jobs/{id}/events) this gateway process holds open.",
)

# Scope key: the request was handed on to an inner app, whose own HttpMetrics counts it.
HANDED_ON = "conveyor.handed_on"

SUBMISSION_PATHS = {"/v1/jobs", "/train", "/execute", "/transform"}


def is_submission(scope: Scope) -> bool:
    return scope.get("method") == "POST" and scope.get("path") in SUBMISSION_PATHS


def _route_template(scope: Scope) -> str:
    # The template (/v1/jobs/{job_id}) the router matched, never the raw path: raw paths
    # carry ids. The router leaves the matched route in the scope.
    return str(getattr(scope.get("route"), "path", None) or "unmatched")


class HttpMetrics:
    """Counts and times every request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Label lookups take a lock and build a key every time: keep the children, per
        # (route, method, status). Bounded: route templates and methods are finite.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._timers: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            if not scope.get(HANDED_ON):
                self._record(_route_template(scope), scope["method"], status, started)

    def _record(self, route: str, method: str, status: int, started: float) -> None:
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(route, method, str(status))
            self._counters[route, method, status] = counter
        counter.inc()
        timer = self._timers.get((route, method))
        if timer is None:
            timer = HTTP_SECONDS.labels(route, method)
            self._timers[route, method] = timer
        timer.observe(time.perf_counter() - started)
