"""The systems under test, behind one small interface: the blog pattern, its durable Celery
peer, and Conveyor (also with two gateway processes).

Each runs as a user would run it (uvicorn / celery / the console scripts), on its own
RabbitMQ vhost, with its processes in their own sessions so they are stopped as a group.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import procs
from bench.procs import REPO, VENV_BIN, Proc

SAMPLE = [{"value": 10}, {"value": 20}, {"value": 30}]
KINDS = ("data", "cmd", "ml")
# Results keys (and `--only` names) of the systems beside "baseline", "sqlite", "postgres".
PEER = "celery-db"
TWO_GATEWAYS = "postgres-2gw"
BASELINE_TASKS = (
    "tasks.commands.execute_command",
    "tasks.data.transform_data",
    "tasks.ml.train_model",
)


def registered_tasks(worker_log: str) -> list[str]:
    """The task names a Celery worker listed under `[tasks]` at start-up (`--loglevel=info`)."""
    lines = worker_log.split("[tasks]", 1)[1].splitlines()[1:]
    tasks = []
    for line in lines:
        if not line.strip().startswith("."):
            break
        tasks.append(line.strip().lstrip(". "))
    return [t for t in tasks if not t.startswith("celery.")]


def _wait_http(proc: Proc, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(url, timeout=2)
            # Conveyor's /readyz is 200 while RabbitMQ is still connecting ("degraded").
            if answer.status_code == 200 and (
                not url.endswith("/readyz") or answer.json()["status"] == "ok"
            ):
                return
        proc.check_alive()
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready in {timeout}s:\n{proc.log()[-3000:]}")


class System:
    label: str
    submit_path: str
    submit_body: str | None
    worker_queues: list[str]

    def __init__(self, broker_url: str, logdir: Path) -> None:
        self.broker_url = broker_url
        self.logdir = logdir
        self.port = procs.free_port()
        self.gateway: Proc | None = None
        self.workers: dict[str, Proc] = {}
        self.headers: dict[str, str] = {}  # sent with every request (an API key)
        self._runs = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    def gateway_rss_mb(self) -> float:
        """The gateway's resident set size: its process and any children (uvicorn --workers)."""
        return sum(procs.rss_mb(pid) for pid in procs.tree(self.gateway_pid))

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def purge(self) -> None:
        procs.purge_queues(self.broker_url, self.worker_queues)

    def _name(self, base: str) -> str:
        self._runs += 1
        return f"{base}.{self._runs}"

    # implemented by each system
    def start_gateway(self) -> None:
        raise NotImplementedError

    def start_workers(self, concurrency: int, kinds: tuple[str, ...] = KINDS) -> None:
        raise NotImplementedError

    def request(self, kind: str) -> tuple[str, str, Any]:
        raise NotImplementedError

    def status_path(self, task_id: str) -> str:
        raise NotImplementedError

    def times(self, ids: list[str]) -> dict[str, tuple[float | None, float | None, bool]]:
        """task id -> (started, finished, succeeded), unix seconds, for the ids seen so far."""
        raise NotImplementedError

    def wait_done(self, ids: list[str], timeout: float, poll_s: float = 0.25) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.times(ids)
            if sum(1 for v in seen.values() if v[1] is not None) >= len(ids):
                return seen
            if time.monotonic() > deadline:
                done = sum(1 for v in seen.values() if v[1] is not None)
                raise TimeoutError(f"{self.label}: {done}/{len(ids)} jobs done after {timeout}s")
            for worker in self.workers.values():
                worker.check_alive()
            time.sleep(poll_s)

    def worker_memory(self) -> dict[str, float]:
        return {name: round(procs.tree_pss_mb(w.pid), 1) for name, w in self.workers.items()}


class Baseline(System):
    """uvicorn main:app + one `celery -A tasks worker`, `rpc://` results."""

    label = "baseline"
    submit_path = "/transform"
    submit_body = None
    worker_queues = ["celery"]
    cwd = REPO / "bench" / "baseline"
    include = "tasks.ml,tasks.commands,tasks.data,tasks.probe"

    def __init__(self, broker_url: str, logdir: Path) -> None:
        super().__init__(broker_url, logdir)
        self.probe_path = logdir / "baseline-probe.log"
        self.probe_path.touch()
        self._probe_offset = 0
        self._starts: dict[str, float] = {}
        self._ends: dict[str, tuple[float, bool]] = {}
        self.env = {
            **os.environ,
            "BROKER_URL": broker_url,
            "BASELINE_PROBE_LOG": str(self.probe_path),
            "PYTHONUNBUFFERED": "1",
        }

    def start_gateway(self) -> None:
        argv = [str(VENV_BIN / "uvicorn"), "main:app", "--host", "127.0.0.1"]
        self.gateway = procs.start(
            "baseline-api", [*argv, "--port", str(self.port)], self.env, self.cwd, self.logdir
        )
        _wait_http(self.gateway, f"{self.base_url}/openapi.json")

    def documented_worker_tasks(self) -> list[str]:
        """Start the worker exactly as documented and read which tasks it registered."""
        proc = procs.start(
            self._name("baseline-documented-worker"),
            [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "--loglevel=info"],
            self.env,
            self.cwd,
            self.logdir,
        )
        try:
            proc.wait_for_log("ready.", timeout=60)
        finally:
            proc.stop()
        return registered_tasks(proc.log())

    def worker_argv(self, concurrency: int, *extra: str) -> list[str]:
        """A worker that registers the tasks (`--include`), with `concurrency` processes."""
        celery = str(VENV_BIN / "celery")
        argv = [celery, "-A", "tasks", "worker", "--loglevel=info", f"--include={self.include}"]
        return [*argv, f"--concurrency={concurrency}", *extra]

    def start_workers(self, concurrency: int, kinds: tuple[str, ...] = KINDS) -> None:
        # One worker for every task, as in the pattern; `concurrency` pool processes.
        proc = procs.start(
            self._name("baseline-worker"),
            self.worker_argv(concurrency),
            self.env,
            self.cwd,
            self.logdir,
        )
        self.workers["all"] = proc
        proc.wait_for_log("ready.", timeout=90)

    def request(self, kind: str) -> tuple[str, str, Any]:
        return {
            "data": ("POST", "/transform", None),
            "tiny": ("POST", "/transform", None),
            "cmd": ("POST", "/execute?command=echo%20hello", None),
            "ml": ("POST", "/train", None),
        }[kind]

    def status_path(self, task_id: str) -> str:
        return f"/status/{task_id}"

    def _read_probe(self) -> None:
        with self.probe_path.open() as handle:
            handle.seek(self._probe_offset)
            chunk = handle.read()
        complete, _, _ = chunk.rpartition("\n")
        if not complete:
            return
        self._probe_offset += len(complete) + 1
        for line in complete.splitlines():
            event, task_id, stamp = line.split()[:3]
            if event == "start":
                self._starts[task_id] = float(stamp)
            else:
                self._ends[task_id] = (float(stamp), True)

    def times(self, ids: list[str]) -> dict[str, tuple[float | None, float | None, bool]]:
        self._read_probe()
        return {
            i: (self._starts.get(i), *self._ends.get(i, (None, False)))
            for i in ids
            if i in self._starts
        }


class CeleryDb(Baseline):
    """The peer a Celery user would pick for durable results: the baseline's app and tasks
    with Celery's SQLAlchemy result backend on PostgreSQL, STARTED recorded, acks late and
    prefetch 1 (switched by environment variables in tasks/__init__.py)."""

    label = "Celery + DB results"

    def __init__(self, broker_url: str, logdir: Path, database_url: str) -> None:
        super().__init__(broker_url, logdir)
        self.database_url = database_url
        self.env["BASELINE_RESULT_BACKEND"] = f"db+{database_url}"  # postgresql+psycopg://
        self.env["BASELINE_DURABLE"] = "1"
        self.worker_tasks: list[str] = []

    def start_gateway(self) -> None:
        super().start_gateway()
        # Celery creates its result tables on their first use: from one request here, not
        # from the first round's 32 threads at once.
        answer = httpx.get(f"{self.base_url}{self.status_path(str(uuid.uuid4()))}", timeout=30)
        answer.raise_for_status()

    def start_workers(self, concurrency: int, kinds: tuple[str, ...] = KINDS) -> None:
        # One worker per job type, as Conveyor runs them (the same number of processes), all
        # consuming the app's one queue.
        for kind in kinds:
            self.workers[kind] = procs.start(
                self._name(f"celery-db-worker-{kind}"),
                self.worker_argv(concurrency, f"--hostname={kind}@%h"),
                self.env,
                self.cwd,
                self.logdir,
            )
        for worker in self.workers.values():
            worker.wait_for_log("ready.", timeout=90)
            self.worker_tasks = registered_tasks(worker.log())
            if not set(BASELINE_TASKS) <= set(self.worker_tasks):
                raise RuntimeError(f"{worker.name} registered only {self.worker_tasks}")

    def request(self, kind: str) -> tuple[str, str, Any]:
        if kind == "tiny":  # the same one-row job as Conveyor's tiny one
            return ("POST", "/transform", [{"value": 1}])
        return super().request(kind)

    def stored_results(self) -> dict[str, int]:
        """Rows in Celery's result table (celery_taskmeta) by state: the results were stored."""
        dsn = self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn) as connection:
            rows = connection.execute(
                "SELECT status, count(*) FROM celery_taskmeta GROUP BY status"
            ).fetchall()
        return {str(status): int(count) for status, count in rows}


class Conveyor(System):
    """conveyor-api serve + conveyor-worker-{ml,cmd,data}, job store SQLite or PostgreSQL."""

    submit_path = "/v1/jobs"
    worker_queues = ["conveyor.ml.train", "conveyor.cmd.run", "conveyor.data.transform"]

    def __init__(self, broker_url: str, logdir: Path, database_url: str, label: str) -> None:
        super().__init__(broker_url, logdir)
        import json

        from conveyor_core.store.engine import make_sync_engine

        self.label = label
        self.database_url = database_url
        self.engine = make_sync_engine(database_url)
        self.submit_body = json.dumps(self._bodies()["data"])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        self.env.update(
            {
                "CONVEYOR_BROKER_URL": broker_url,
                "CONVEYOR_DATABASE_URL": database_url,
                "CONVEYOR_ARTIFACT_URL": str(logdir / "artifacts"),
                # Full guarantees, but no per-key quota: the bench measures the gateway,
                # not the rate limiter (ignored by a gateway without these settings).
                "CONVEYOR_SUBMIT_RATE_PER_S": "0",
                "CONVEYOR_MAX_QUEUED_PER_KEY": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )

    @staticmethod
    def _bodies() -> dict[str, dict[str, Any]]:
        double = {"op": "compute", "column": "double", "left": "value", "operator": "mul"}
        return {
            "data": {
                "type": "data.transform",
                "params": {"rows": SAMPLE, "steps": [{**double, "right": 2}]},
            },
            "tiny": {"type": "data.transform", "params": {"rows": [{"value": 1}]}},
            "cmd": {"type": "cmd.run", "params": {"command": "echo", "args": ["hello"]}},
            "ml": {
                "type": "ml.train",
                "params": {"dataset": "iris", "model": "logistic_regression"},
            },
        }

    def create_api_key(self) -> None:
        """An admin API key, when this gateway has keys; requests carry it as a bearer token."""
        created = subprocess.run(
            [str(VENV_BIN / "conveyor-api"), "keys", "create", "bench", "--admin"],
            env=self.env,
            cwd=self.logdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if created.returncode == 0 and created.stdout.strip():
            self.headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        else:  # a gateway from before API keys: nothing to authenticate
            self.env["CONVEYOR_AUTH_ENABLED"] = "false"

    def start_gateway(self) -> None:
        self.create_api_key()
        self.gateway = procs.start(
            f"{self.label}-api",
            [str(VENV_BIN / "conveyor-api"), "serve", "--port", str(self.port)],
            self.env,
            self.logdir,
            self.logdir,
        )
        _wait_http(self.gateway, f"{self.base_url}/readyz")

    def start_workers(self, concurrency: int, kinds: tuple[str, ...] = KINDS) -> None:
        env = {**self.env, "CONVEYOR_WORKER_CONCURRENCY": str(concurrency)}
        for kind in kinds:
            self.workers[kind] = procs.start(
                self._name(f"{self.label}-worker-{kind}"),
                [str(VENV_BIN / f"conveyor-worker-{kind}")],
                env,
                self.logdir,
                self.logdir,
            )
        for kind in kinds:
            self.workers[kind].wait_for_log("ready.", timeout=90)

    def request(self, kind: str) -> tuple[str, str, Any]:
        return ("POST", "/v1/jobs", self._bodies()[kind])

    def status_path(self, task_id: str) -> str:
        return f"/v1/jobs/{task_id}"

    def times(self, ids: list[str]) -> dict[str, tuple[float | None, float | None, bool]]:
        import uuid

        from conveyor_core.store import Job
        from sqlalchemy import select

        found: dict[str, tuple[float | None, float | None, bool]] = {}
        with self.engine.connect() as connection:
            for offset in range(0, len(ids), 500):
                chunk = [uuid.UUID(i) for i in ids[offset : offset + 500]]
                rows = connection.execute(
                    select(Job.id, Job.state, Job.started_at, Job.finished_at).where(
                        Job.id.in_(chunk)
                    )
                )
                for row in rows:
                    if row.started_at is None:
                        continue
                    finished = row.finished_at.timestamp() if row.finished_at else None
                    ok = row.state == "succeeded"
                    found[str(row.id)] = (row.started_at.timestamp(), finished, ok)
        return found

    def stop(self) -> None:
        super().stop()
        self.engine.dispose()


class ConveyorGateways(Conveyor):
    """Conveyor on PostgreSQL with `processes` gateway processes behind one port: uvicorn's
    `--workers`, each process running `create_app()` with the same environment."""

    def __init__(self, broker_url: str, logdir: Path, database_url: str, processes: int) -> None:
        label = f"Conveyor (PostgreSQL, {processes} gateway processes)"
        super().__init__(broker_url, logdir, database_url, label)
        self.processes = processes

    def start_gateway(self) -> None:
        self.create_api_key()  # also migrates the database, before the processes start
        self.gateway = procs.start(
            f"{self.label}-api",
            [
                str(VENV_BIN / "uvicorn"),
                "--factory",
                "conveyor_api.main:create_app",
                f"--workers={self.processes}",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--log-level=info",
                "--no-access-log",  # as `conveyor-api serve` by default
                "--timeout-graceful-shutdown=20",
            ],
            self.env,
            self.logdir,
            self.logdir,
        )
        # /readyz answers from whichever process is up first: wait for every one.
        deadline = time.monotonic() + 60
        while self.gateway.log().count("Application startup complete.") < self.processes:
            self.gateway.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: not started in 60s:\n{self.gateway.log()}")
            time.sleep(0.2)
        _wait_http(self.gateway, f"{self.base_url}/readyz")
