"""The plain-ASGI routes (gateway_app.py, routes/jobs.py) answer the common request
themselves, and every request exactly as the FastAPI routes behind them do.

Each request is sent twice over HTTP to one gateway (uvicorn, in a thread of the test),
on a real job store and RabbitMQ vhost: once with the hot routes in front, once with them
taken out, and the two answers compared.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conveyor_api.gateway_app import GatewayApp
from conveyor_api.keys import create_key
from conveyor_api.main import create_app
from conveyor_api.metrics import HANDED_ON
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.settings import Settings
from conveyor_core.store.engine import make_sync_engine
from httpx import Response
from starlette.types import Receive, Scope, Send
from support.stack import RABBITMQ_HOST, free_port, rabbitmq_vhost

COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "idempotent-replayed")


@dataclass
class Gateway:
    app: GatewayApp
    client: httpx.Client
    scopes: list[Scope]  # each request's scope, as the app left it
    user: dict[str, str]  # Authorization headers
    other: dict[str, str]

    def send(self, method: str, path: str, *, hot: bool, **kwargs: Any) -> tuple[Response, bool]:
        """The answer, and whether the hot routes declined the request."""
        hot_routes = self.app.hot_routes
        if not hot:
            self.app.hot_routes = ()
        try:
            response = self.client.request(method, path, **kwargs)
        finally:
            self.app.hot_routes = hot_routes
        return response, HANDED_ON in self.scopes[-1]

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[Response, Response, bool]:
        hot, declined = self.send(method, path, hot=True, **kwargs)
        plain, _ = self.send(method, path, hot=False, **kwargs)
        return hot, plain, declined


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    engine = make_sync_engine(database_url)
    user = create_key(engine, "user", admin=False)[1]
    other = create_key(engine, "other", admin=False)[1]
    engine.dispose()
    with rabbitmq_vhost() as vhost:
        settings = Settings(
            broker_url=f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}",
            database_url=database_url,
            artifact_url=str(tmp_path / "artifacts"),
            auth_enabled=True,
        )
        app = create_app(settings)
        scopes: list[Scope] = []

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            scopes.append(scope)
            await app(scope, receive, send)

        server = uvicorn.Server(
            uvicorn.Config(recording, host="127.0.0.1", port=free_port(), log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base_url = f"http://127.0.0.1:{server.config.port}"
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                wait_ready(client)
                yield Gateway(
                    app,
                    client,
                    scopes,
                    {"Authorization": f"Bearer {user}"},
                    {"Authorization": f"Bearer {other}"},
                )
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def wait_ready(client: httpx.Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").json()["status"] == "ok":  # RabbitMQ connected too
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise TimeoutError(f"gateway not ready in {timeout} s")


def assert_same(hot: Response, plain: Response) -> None:
    assert (hot.status_code, hot.json()) == (plain.status_code, plain.json())
    for name in COMPARED_HEADERS:
        assert hot.headers.get(name) == plain.headers.get(name), name


VALID_JSON = b'{"type": "cmd.run", "params": {"command": "echo"}}'  # valid only as JSON


def submission(type_name: str, **changes: Any) -> dict[str, Any]:
    return {"type": type_name, "params": {**JOB_TYPES[type_name].example, **changes}}


def test_valid_submissions_are_answered_by_the_hot_route(gateway: Gateway):
    for type_name in JOB_TYPES:
        body = submission(type_name)
        hot, plain, declined = gateway.both("POST", "/v1/jobs", json=body, headers=gateway.user)
        assert not declined
        assert hot.status_code == plain.status_code == 202, hot.text
        assert hot.json().keys() == plain.json().keys()
        assert hot.json()["type"] == type_name and hot.json()["state"] == "queued"
        assert hot.headers["location"] == f"/v1/jobs/{hot.json()['id']}"
        assert hot.headers["content-type"] == plain.headers["content-type"]


def test_a_replayed_idempotent_submission_is_the_same_job(gateway: Gateway):
    body = submission("data.transform")
    headers = {**gateway.user, "Idempotency-Key": "order-42"}
    first, declined = gateway.send("POST", "/v1/jobs", hot=True, json=body, headers=headers)
    assert first.status_code == 202 and not declined
    hot, plain, _ = gateway.both("POST", "/v1/jobs", json=body, headers=headers)
    assert_same(hot, plain)
    assert hot.json()["id"] == first.json()["id"]
    assert hot.headers["idempotent-replayed"] == "true"
    changed = submission("data.transform", rows=[{"city": "Rome", "value": 1}])
    hot, plain, _ = gateway.both("POST", "/v1/jobs", json=changed, headers=headers)
    assert hot.status_code == 409
    assert_same(hot, plain)


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": submission("ml.train", test_size=7)},
        {"json": {"type": "gpu.mine", "params": {}}},
        {"json": {**submission("cmd.run"), "priority": 1}},
        {
            "json": submission(
                "data.transform", rows=[{"a": 1}], steps=[{"op": "sort", "by": ["b"]}]
            )
        },
    ],
    ids=["a bad param", "an unknown type", "an extra field", "an unknown column"],
)
def test_bodies_that_do_not_validate_get_fastapis_422_from_the_hot_route(
    gateway: Gateway, request_kwargs: dict[str, Any]
):
    # Answered where they were validated: a large body is not validated twice.
    hot, plain, declined = gateway.both("POST", "/v1/jobs", headers=gateway.user, **request_kwargs)
    assert not declined
    assert hot.status_code == 422, hot.text
    assert_same(hot, plain)


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status"),
    [
        (
            "broken JSON",
            {"content": b'{"type": ', "headers": {"Content-Type": "application/json"}},
            422,
        ),
        ("no content type", {"content": VALID_JSON}, 422),
        (
            "a text content type",
            {"content": VALID_JSON, "headers": {"Content-Type": "text/plain"}},
            422,
        ),
        ("form data", {"data": {"type": "cmd.run"}}, 422),
        (
            "an oversized idempotency key",
            {"json": submission("cmd.run"), "headers": {"Idempotency-Key": "k" * 256}},
            422,
        ),
    ],
)
def test_requests_the_hot_route_declines_get_fastapis_answer(
    gateway: Gateway, name: str, request_kwargs: dict[str, Any], status: int
):
    request_kwargs = {
        **request_kwargs,
        "headers": {**gateway.user, **request_kwargs.get("headers", {})},
    }
    hot, plain, declined = gateway.both("POST", "/v1/jobs", **request_kwargs)
    assert declined, name
    assert hot.status_code == status, hot.text
    assert_same(hot, plain)


def test_refusals_raised_on_the_hot_route_match_fastapis(gateway: Gateway):
    body = submission("cmd.run", command="rm")  # not in the command catalog
    refusals = [
        ("POST", "/v1/jobs", {"json": body, "headers": gateway.user}, 403),
        ("POST", "/v1/jobs", {"json": submission("cmd.run")}, 401),
        ("POST", "/v1/jobs", {"json": {"type": 1}}, 401),  # the key is checked before the body
        (
            "POST",
            "/v1/jobs",
            {"json": submission("cmd.run"), "headers": {"Authorization": "Bearer cnv_nope"}},
            401,
        ),
        ("GET", f"/v1/jobs/{uuid.uuid4()}", {"headers": gateway.user}, 404),
        ("GET", "/v1/jobs/not-a-uuid", {"headers": gateway.user}, 422),
        ("GET", f"/v1/jobs/{uuid.uuid4()}", {}, 401),
    ]
    for method, path, kwargs, status in refusals:
        hot, plain, _ = gateway.both(method, path, **kwargs)
        assert hot.status_code == status, (method, path, hot.text)
        assert_same(hot, plain)


def test_polls_are_answered_by_the_hot_route_for_the_owner_only(gateway: Gateway):
    accepted = gateway.client.post(
        "/v1/jobs", json=submission("data.transform"), headers=gateway.user
    )
    job_id = accepted.json()["id"]
    for spelling in (job_id, job_id.replace("-", ""), job_id.upper()):
        hot, plain, declined = gateway.both("GET", f"/v1/jobs/{spelling}", headers=gateway.user)
        assert not declined
        assert hot.status_code == 200 and hot.json()["id"] == job_id
        assert_same(hot, plain)
    hot, plain, _ = gateway.both("GET", f"/v1/jobs/{job_id}", headers=gateway.other)
    assert hot.status_code == 404
    assert_same(hot, plain)
    # Other methods on the same path are not the hot route's: FastAPI's 405.
    hot, plain, _ = gateway.both("DELETE", f"/v1/jobs/{job_id}", headers=gateway.user)
    assert hot.status_code == 405 and hot.headers["allow"] == plain.headers["allow"]


def test_hot_requests_are_counted_under_their_route_template(gateway: Gateway):
    def count(status: str) -> float:
        for line in gateway.client.get("/metrics").text.splitlines():
            if line.startswith(
                f'conveyor_http_requests_total{{method="GET",route="/v1/jobs/{{job_id}}",'
                f'status="{status}"}}'
            ):
                return float(line.split()[-1])
        return 0.0

    before = count("404")
    response, declined = gateway.send(
        "GET", f"/v1/jobs/{uuid.uuid4()}", hot=True, headers=gateway.user
    )
    assert response.status_code == 404 and not declined
    assert count("404") == before + 1
