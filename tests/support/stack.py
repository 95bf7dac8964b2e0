"""Real processes for end-to-end tests: a RabbitMQ vhost, a database, the gateway, workers.

Everything runs as it would for a user: the console scripts, real RabbitMQ, real
PostgreSQL or SQLite, real HTTP. Each stack gets its own vhost and database, so tests
never see each other's queues or rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from conveyor_core.jobs import JOB_TYPES

VENV_BIN = Path(sys.executable).parent
RABBITMQ_HOST = "127.0.0.1"
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
WORKERS = tuple(job.worker for job in JOB_TYPES.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh vhost for one stack; yields its AMQP URL and deletes it afterwards."""
    vhost = f"conveyor-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


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


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"conveyor_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
        log_path = self.workdir / f"{name}.log"
        env = {**self.env, **extra_env}
        process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service = Service(name, process, log_path)
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
            self._fail_if_exited()
            time.sleep(0.2)
        else:
            raise RuntimeError(f"gateway not ready in {timeout}s:\n{self.services['api'].log()}")
        for kind in WORKERS:
            if kind in self.services:
                self.wait_for_log(kind, "ready.", timeout=deadline - time.monotonic())

    def wait_for_log(self, name: str, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 1)
        while needle not in self.services[name].log():
            self._fail_if_exited()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never logged {needle!r}:\n{self.services[name].log()}")
            time.sleep(0.2)

    def _fail_if_exited(self) -> None:
        for service in self.services.values():
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.process.returncode}:\n{service.log()}"
                )

    def stop(self) -> None:
        for service in self.services.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGTERM)
        for service in self.services.values():
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait(timeout=5)

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
            "CONVEYOR_BROKER_URL": f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}",
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
