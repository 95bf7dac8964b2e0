"""Real processes for end-to-end tests: a RabbitMQ vhost, a database, the gateway, workers.

Everything runs as it would for a user: the console scripts, real RabbitMQ, real
PostgreSQL or SQLite, real HTTP. Each stack gets its own vhost and database, so tests
never see each other's queues or rows. Those and the process handles come from
conveyor_harness (libs/conveyor-harness), which the bench uses too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import conveyor_harness
import httpx
from conveyor_core.jobs import JOB_TYPES
from conveyor_harness import RABBITMQ_HOST, amqp_url, check_alive, free_port, rabbitmqctl
from conveyor_harness import Proc as Service

# Tests import these from here.
__all__ = ["RABBITMQ_HOST", "Service", "free_port", "rabbitmqctl"]

VENV_BIN = Path(sys.executable).parent
WORKERS = tuple(job.worker for job in JOB_TYPES.values())


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh vhost for one stack; yields its name and deletes it afterwards."""
    with conveyor_harness.rabbitmq_vhost("conveyor-test") as vhost:
        yield vhost.name


def list_queues(vhost: str) -> dict[str, dict[str, str]]:
    """Queue name -> {messages, arguments} as RabbitMQ itself reports them."""
    out = rabbitmqctl(
        "list_queues", "-p", vhost, "--no-table-headers", "name", "messages", "arguments"
    )
    queues = {}
    for line in out.splitlines():
        if line.strip():
            name, messages, arguments = line.split("\t", 2)
            queues[name] = {"messages": messages, "arguments": arguments}
    return queues


def wait_until_drained(vhost: str, timeout: float = 15) -> dict[str, dict[str, str]]:
    """The vhost's queues once none holds a message (ready or unacked).

    A worker acks just after it records a job's outcome, so the last acks of a run land a
    moment after the job store says everything is finished.
    """
    deadline = time.monotonic() + timeout
    queues = list_queues(vhost)
    while any(queue["messages"] != "0" for queue in queues.values()):
        assert time.monotonic() < deadline, f"messages left behind: {queues}"
        time.sleep(0.5)
        queues = list_queues(vhost)
    return queues


def postgres_database() -> contextlib.AbstractContextManager[str]:
    """A fresh PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    return conveyor_harness.postgres_database("conveyor_test_")


@dataclass
class Stack:
    """The gateway and workers as subprocesses, configured only through CONVEYOR_* env."""

    workdir: Path
    env: dict[str, str]
    vhost: str
    port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str | None = None) -> httpx.Client:
        """An HTTP client of the gateway; with `api_key`, one that sends it as its key."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def start_service(self, name: str, argv: list[str], **extra_env: str) -> Service:
        env = {**self.env, **extra_env}
        service = conveyor_harness.start(name, argv, env, self.workdir, self.workdir)
        self.services[name] = service
        return service

    def start_api(self, **extra_env: str) -> Service:
        return self.start_service(
            "api", [str(VENV_BIN / "conveyor-api"), "serve", "--port", str(self.port)], **extra_env
        )

    def start_worker(self, kind: str, name: str | None = None, **extra_env: str) -> Service:
        """Start a worker; `name` (default: the kind) names its log, e.g. for a replacement."""
        argv = [str(VENV_BIN / f"conveyor-worker-{kind}")]
        return self.start_service(name or kind, argv, **extra_env)

    def retire(self, name: str) -> Service:
        """Forget a service that was stopped or killed on purpose (its log stays readable)."""
        return self.services.pop(name)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["status"] == "ok":
                    break  # the job store answers and RabbitMQ is connected
            check_alive(self.services.values())
            time.sleep(0.2)
        else:
            raise RuntimeError(f"gateway not ready in {timeout}s:\n{self.services['api'].log()}")
        for kind in WORKERS:
            if kind in self.services:
                self.wait_for_log(kind, "ready.", timeout=deadline - time.monotonic())

    def wait_for_log(self, name: str, needle: str, timeout: float) -> None:
        """Wait for `needle` in a service's log; fail early if any service exits."""
        self.services[name].wait_for_log(needle, max(timeout, 1), self.services.values())

    def stop(self) -> None:
        conveyor_harness.stop_all(self.services.values())

    # --- helpers for tests
    def submit(
        self, client: httpx.Client, job_type: str, params: dict[str, Any], **headers: str
    ) -> dict[str, Any]:
        response = client.post(
            "/v1/jobs", json={"type": job_type, "params": params}, headers=headers
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for(
        self, client: httpx.Client, job_id: str, states: set[str], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in self.services.values())
                raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s\n{logs}")
            time.sleep(0.1)


def base_env(workdir: Path, vhost: str, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env.update(
        {
            "CONVEYOR_BROKER_URL": amqp_url(vhost),
            "CONVEYOR_DATABASE_URL": database_url,
            "CONVEYOR_ARTIFACT_URL": str(workdir / "artifacts"),
            "CONVEYOR_HEARTBEAT_INTERVAL_S": "0.3",
            "CONVEYOR_CANCEL_GRACE_S": "3",
            "CONVEYOR_LOG_LEVEL": "INFO",
            "CONVEYOR_AUTH_ENABLED": "false",  # tests/api/test_auth.py turns it on
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextlib.contextmanager
def running_stack(
    workdir: Path, database: str, workers: tuple[str, ...] = WORKERS, **extra_env: str
) -> Iterator[Stack]:
    """Gateway + workers on a fresh vhost and a fresh database ('sqlite' or 'postgres')."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        vhost = cleanup.enter_context(rabbitmq_vhost())
        if database == "postgres":
            database_url = cleanup.enter_context(postgres_database())
        else:
            database_url = f"sqlite:///{workdir / 'conveyor.db'}"
        stack = Stack(
            workdir=workdir,
            env={**base_env(workdir, vhost, database_url), **extra_env},
            vhost=vhost,
        )
        cleanup.callback(stack.stop)
        stack.start_api()
        stack.wait_ready()  # the gateway migrates the schema before workers touch it
        for kind in workers:
            stack.start_worker(kind)
        stack.wait_ready()
        yield stack
        if os.environ.get("CONVEYOR_TEST_KEEP_LOGS"):
            shutil.copytree(workdir, Path(os.environ["CONVEYOR_TEST_KEEP_LOGS"]) / workdir.name)
