"""A real Prometheus scraping a real stack while a workload of every job type runs.

The stack is started the way tests/support/stack.py starts every stack (own RabbitMQ vhost,
console scripts, CONVEYOR_* env), with a metrics port per worker. Prometheus scrapes, every
second, the gateway, the workers and RabbitMQ's rabbitmq_prometheus endpoint for the stack's
vhost, and evaluates deploy/prometheus/rules.yml. The scrape job names are the ones the chart's
ServiceMonitor and PodMonitor produce for release "conveyor" in namespace "conveyor", so the
rules file rendered with default values applies unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from promql_checks import Prometheus
from support.procs import pool_process_running
from support.stack import VENV_BIN, Stack, free_port, running_stack

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RABBITMQ_PROMETHEUS = "127.0.0.1:15692"
API_JOB = "conveyor-api"
WORKERS_JOB = "conveyor/conveyor-workers"
RABBITMQ_JOB = "rabbitmq"
JOB_TYPES = ("ml.train", "cmd.run", "data.transform")
TERMINAL = {"succeeded", "failed", "cancelled"}
MAX_ATTEMPTS = 2


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = (
            "the `prometheus` binary is missing: run `make prometheus` "
            "(installs the Debian package prometheus) before tests/observability"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def rabbitmq_prometheus_ready() -> None:
    try:
        httpx.get(f"http://{RABBITMQ_PROMETHEUS}/metrics", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        pytest.fail(
            f"RabbitMQ's Prometheus endpoint {RABBITMQ_PROMETHEUS} does not answer ({error}): "
            "run `rabbitmq-plugins enable rabbitmq_prometheus`"
        )


def prometheus_config(api_port: int, worker_ports: dict[str, int], vhost: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": API_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
            },
            {
                "job_name": WORKERS_JOB,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"pod": name}}
                    for name, port in worker_ports.items()
                ],
            },
            {
                # Per-queue metrics: the detailed endpoint, two families, this stack's vhost.
                "job_name": RABBITMQ_JOB,
                "metrics_path": "/metrics/detailed",
                "params": {
                    "family": ["queue_coarse_metrics", "queue_consumer_count"],
                    "vhost": [vhost],
                },
                "static_configs": [{"targets": [RABBITMQ_PROMETHEUS]}],
            },
        ],
    }


@contextlib.contextmanager
def running_prometheus(workdir: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log_path = workdir / "prometheus.log"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not start:\n{prometheus.log_tail()}")
            time.sleep(0.2)
        yield prometheus
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


# --- the workload


@dataclass
class Workload:
    """What ran, so tests can say what they expect to see."""

    stack: Stack
    started: float = 0.0
    finished: float = 0.0
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> label
    outcomes: dict[str, str] = field(default_factory=dict)  # label -> final state
    retried: str = ""
    dead_lettered: str = ""

    def submit(self, client: httpx.Client, label: str, job_type: str, params: Any) -> str:
        job_id = self.stack.submit(client, job_type, params)["id"]
        self.jobs[job_id] = label
        return job_id

    def kill_pool_process(self, client: httpx.Client, job_id: str, marker: str, times: int) -> None:
        """SIGKILL the pool process running `sleep <marker>`, `times` times (a lost worker)."""
        kills = 0
        deadline = time.monotonic() + 90
        while kills < times:
            assert time.monotonic() < deadline, f"could not kill the pool of {job_id} {times}x"
            job = client.get(f"/v1/jobs/{job_id}").json()
            pool_pid = pool_process_running(marker)
            if job["state"] == "running" and pool_pid is not None:
                os.kill(pool_pid, signal.SIGKILL)
                kills += 1
                while pool_process_running(marker) is not None:
                    time.sleep(0.05)
            time.sleep(0.1)


def run_workload(stack: Stack, scale_up: Any) -> Workload:
    """About a minute of traffic: every job type, successes, failures at the worker, a cancel,
    a retry after a lost worker, a dead-lettered job, refused submissions, a scale-up."""
    work = Workload(stack, started=time.time())
    with stack.client() as client:
        # Refused submissions: validation (422), forbidden (403), idempotency conflict (409).
        assert client.post("/v1/jobs", json={"type": "ml.train", "params": {}}).status_code == 422
        forbidden = {"type": "cmd.run", "params": {"command": "rm", "args": ["-rf", "/"]}}
        assert client.post("/v1/jobs", json=forbidden).status_code == 403
        key = {"Idempotency-Key": "observability-1"}
        first = {"type": "cmd.run", "params": {"command": "echo", "args": ["a"]}}
        other = {"type": "cmd.run", "params": {"command": "echo", "args": ["b"]}}
        assert client.post("/v1/jobs", json=first, headers=key).status_code == 202
        assert client.post("/v1/jobs", json=other, headers=key).status_code == 409

        # A cmd.run job that will be cancelled while it runs, and one whose worker is lost
        # once (then retried), and one whose worker is lost on every attempt (dead-lettered).
        cancel_id = work.submit(client, "cancel", "cmd.run", {"command": "sleep", "args": ["61"]})
        retry_id = work.submit(client, "retry", "cmd.run", {"command": "sleep", "args": ["4.25"]})
        work.retried = retry_id
        # A backlog: more sleeping commands than the cmd worker's two pool processes.
        for i in range(6):
            work.submit(client, f"backlog-{i}", "cmd.run", {"command": "sleep", "args": ["3"]})
        while stack.wait_for(client, cancel_id, {"running"} | TERMINAL)["state"] != "running":
            time.sleep(0.1)
        assert client.post(f"/v1/jobs/{cancel_id}/cancel").status_code == 202
        work.kill_pool_process(client, retry_id, "4.25", times=1)
        poison_id = work.submit(client, "poison", "cmd.run", {"command": "sleep", "args": ["7.75"]})
        work.dead_lettered = poison_id

        def poison() -> None:
            with stack.client() as own_client:
                work.kill_pool_process(own_client, poison_id, "7.75", MAX_ATTEMPTS)

        killer = threading.Thread(target=poison)
        killer.start()

        scale_up()  # a second cmd worker, as KEDA would add a replica for the backlog

        # Steady traffic of every type, with failures at the worker.
        for i in range(12):
            work.submit(client, f"echo-{i}", "cmd.run", {"command": "echo", "args": [str(i)]})
            work.submit(
                client,
                f"transform-{i}",
                "data.transform",
                {
                    "rows": [{"city": "Oslo", "value": i}, {"city": "Lima", "value": 2 * i}],
                    "steps": [
                        {
                            "op": "compute",
                            "column": "d",
                            "left": "value",
                            "operator": "mul",
                            "right": 2,
                        },
                        {"op": "sort", "by": ["d"]},
                    ],
                },
            )
            if i % 3 == 0:
                # Fails at the worker: the source file does not exist.
                work.submit(
                    client,
                    f"transform-missing-{i}",
                    "data.transform",
                    {"source": "uploads/missing.csv"},
                )
            if i % 4 == 0:
                work.submit(
                    client,
                    f"train-{i}",
                    "ml.train",
                    {"dataset": "iris", "model": "logistic_regression"},
                )
            if i % 4 == 1:
                work.submit(
                    client,
                    f"train-synthetic-{i}",
                    "ml.train",
                    {
                        "dataset": "synthetic",
                        "model": "random_forest",
                        "n_samples": 4000,
                        "hyperparameters": {"n_estimators": 60},
                    },
                )
            if i % 3 == 2:
                work.submit(
                    client,
                    f"train-missing-{i}",
                    "ml.train",
                    {
                        "dataset": "file",
                        "model": "logistic_regression",
                        "source": "uploads/missing.csv",
                    },
                )
            time.sleep(2.5)
        killer.join(timeout=90)
        for job_id, label in work.jobs.items():
            work.outcomes[label] = stack.wait_for(client, job_id, TERMINAL, timeout=120)["state"]
    work.finished = time.time()
    return work


def start_metrics_worker(stack: Stack, name: str, kind: str, port: int) -> None:
    stack.start_service(
        name,
        [str(VENV_BIN / f"conveyor-worker-{kind}")],
        CONVEYOR_METRICS_PORT=str(port),
        CONVEYOR_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    stack.wait_for_log(name, "ready.", timeout=90)


@dataclass
class Observed:
    prometheus: Prometheus
    workload: Workload
    worker_ports: dict[str, int]
    at: float  # evaluation time of the instant queries


@contextlib.contextmanager
def observed_workload(workdir: Path) -> Iterator[Observed]:
    prometheus_binary()
    rabbitmq_prometheus_ready()
    with running_stack(workdir, "sqlite", workers=()) as stack:
        worker_ports = {
            "ml": free_port(),
            "cmd": free_port(),
            "data": free_port(),
            "cmd-2": free_port(),
        }
        config = prometheus_config(stack.port, worker_ports, stack.vhost)
        with running_prometheus(workdir, config) as prometheus:
            for name in ("ml", "cmd", "data"):
                start_metrics_worker(stack, name, name, worker_ports[name])
            prometheus.wait_until(f'sum(up{{job="{WORKERS_JOB}"}}) >= 3')
            prometheus.wait_until(f'up{{job="{RABBITMQ_JOB}"}} == 1')
            time.sleep(3)  # a few scrapes of the idle stack first
            workload = run_workload(
                stack, lambda: start_metrics_worker(stack, "cmd-2", "cmd", worker_ports["cmd-2"])
            )
            time.sleep(4)  # the last outcomes are scraped
            yield Observed(prometheus, workload, worker_ports, at=time.time())
