"""Broker down: a clear 503 within 2 s, no job row claiming `queued`, recovery by itself."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.proxy import CuttableProxy
from support.stack import RABBITMQ_HOST, Stack, base_env, rabbitmq_vhost

ECHO = {"type": "cmd.run", "params": {"command": "echo", "args": ["hi"]}}


@pytest.fixture(scope="module")
def proxied_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, CuttableProxy]]:
    """Gateway and cmd worker reaching RabbitMQ through a proxy the test can cut."""
    workdir: Path = tmp_path_factory.mktemp("outage")
    proxy = CuttableProxy(RABBITMQ_HOST, 5672)
    with rabbitmq_vhost() as vhost, contextlib.ExitStack() as cleanup:
        env = base_env(workdir, vhost, f"sqlite:///{workdir / 'conveyor.db'}")
        env["CONVEYOR_BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
        stack = Stack(workdir=workdir, env=env, vhost=vhost)
        cleanup.callback(proxy.close)
        cleanup.callback(stack.stop)
        stack.start_api()
        stack.start_worker("cmd")
        stack.wait_ready()
        yield stack, proxy


def _wait_ready(client: httpx.Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").json()["status"] != "ok":
        assert time.monotonic() < deadline, "gateway did not reconnect to RabbitMQ"
        time.sleep(0.2)


def test_submission_during_an_outage_is_refused_fast_and_leaves_nothing(proxied_stack):
    stack, proxy = proxied_stack
    with stack.client() as client:
        stack.wait_for(client, stack.submit(client, **_as_kwargs(ECHO))["id"], {"succeeded"})
        jobs_before = client.get("/v1/jobs", params={"limit": 500}).json()["items"]
        proxy.cut()
        started = time.monotonic()
        response = client.post("/v1/jobs", json=ECHO)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert "broker unavailable" in response.json()["detail"]
        assert elapsed < 2.0, f"503 took {elapsed:.2f}s"
        # Still ready: everything but submissions works without RabbitMQ (job status,
        # listing, events, the console), so the gateway stays in its Service.
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "degraded",
            "checks": {"broker": "unreachable", "job_store": "ok"},
        }
        assert client.get(f"/v1/jobs/{jobs_before[0]['id']}").status_code == 200
        compat = client.post("/execute", params={"command": "echo hi"})
        assert compat.status_code == 503
        assert client.get("/v1/jobs", params={"limit": 500}).json()["items"] == jobs_before

        proxy.restore()
        _wait_ready(client)
        job = stack.submit(client, **_as_kwargs(ECHO))
        # The worker reconnects by itself too: the job after the outage runs.
        assert stack.wait_for(client, job["id"], {"succeeded"}, timeout=60)["state"] == "succeeded"


def test_gateway_starts_without_a_broker_and_says_it_is_degraded(tmp_path: Path):
    with rabbitmq_vhost() as vhost:
        env = base_env(tmp_path, vhost, f"sqlite:///{tmp_path / 'conveyor.db'}")
        env["CONVEYOR_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there
        stack = Stack(workdir=tmp_path, env=env, vhost=vhost)
        try:
            stack.start_api()
            with stack.client() as client:
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            break
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
                ready = client.get("/readyz")
                assert ready.status_code == 200  # it serves reads: it belongs in its Service
                assert ready.json()["status"] == "degraded"
                assert ready.json()["checks"]["broker"] == "unreachable"
                started = time.monotonic()
                assert client.post("/v1/jobs", json=ECHO).status_code == 503
                assert time.monotonic() - started < 2.0
                assert client.get("/v1/jobs").json()["items"] == []
        finally:
            stack.stop()


def _as_kwargs(body: dict) -> dict:
    return {"job_type": body["type"], "params": body["params"]}
