"""`make bench` / `make bench-quick`: the blog pattern vs Conveyor (SQLite, PostgreSQL).

    uv run python -m bench.run            # full: ~15 min on 2 cores
    uv run python -m bench.run --quick    # under 2 min: catches a collapse, not a regression

Every figure is taken in the same invocation for the baseline and both Conveyor job
stores, and compared as a ratio. Loads go to 127.0.0.1 only and every loop is bounded
in count and time. Vhosts, databases, processes and temporary files are removed at
the end (logs are kept, and their folder printed, when something fails).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import load, procs, report
from bench.procs import REPO, VENV_BIN
from bench.systems import (
    PEER,
    TWO_GATEWAYS,
    Baseline,
    CeleryDb,
    Conveyor,
    ConveyorGateways,
    System,
)


@dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int  # interleaved rounds of the throughput and status runs (measure_http)
    submit_seconds: int  # each system's throughput run, each round
    status_seconds: int
    dispatch_jobs: int
    overhead_jobs: int
    noop_jobs: int
    drain_jobs: int
    drain_concurrency: tuple[int, ...]
    transform_rows: tuple[int, ...]
    loop_batch: int  # the baseline loop builds its dicts this many rows at a time
    publish_seconds: int  # the publish + confirm ceiling, without HTTP or job store
    fixed_rate: int = 0  # submissions/s offered by hey for the latency runs; 0: none


FULL = Plan(
    "full", 3, 10, 10, 500, 1000, 3000, 5000, (1, 2), (1_000_000, 10_000_000), 1_000_000, 10, 1000
)
QUICK = Plan("quick", 2, 2, 2, 0, 0, 0, 0, (), (1_000_000,), 1_000_000, 0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the HTTP side: every system's gateway up at once, measured in interleaved rounds


def measure_http(systems: dict[str, System], plan: Plan) -> dict[str, dict[str, Any]]:
    """Submission throughput, then status polling, in `plan.rounds` interleaved rounds.

    Each round runs every system once, back to back, starting with a different one each
    time. The shared machine's speed drifts over minutes (the baseline's submissions went
    483 -> 774/s between two full runs an hour apart), so systems measured one after the
    other, minutes apart, met different machines; within a round they meet the same one.
    The table takes each system's median round; the JSON keeps every round.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in systems}
    for system in systems.values():
        system.start_gateway()
    time.sleep(1)
    status_urls = {}
    for name, system in systems.items():
        out[name]["gateway_rss_idle_mb"] = round(system.gateway_rss_mb(), 1)
        _submissions(system, seconds=1)  # warm-up
        system.purge()
        status_urls[name] = _status_url(system)
    names = list(systems)
    for round_no in range(plan.rounds):
        log(f"round {round_no + 1}/{plan.rounds}: submissions, {plan.submit_seconds}s each")
        for name in _rotated(names, round_no):
            system = systems[name]
            run = _submissions(system, plan.submit_seconds)
            out[name].setdefault("submit_runs", []).append(run.as_dict())
            out[name].setdefault("gateway_rss_after_mb", []).append(
                round(system.gateway_rss_mb(), 1)
            )
            system.purge()  # every run starts with the queue empty, not behind the last one's
    for round_no in range(plan.rounds if plan.fixed_rate else 0):
        log(f"round {round_no + 1}/{plan.rounds}: submissions at {plan.fixed_rate}/s offered")
        for name in _rotated(names, round_no):
            system = systems[name]
            # Evenly spread (the target's), then in hey's bursts of 50 (reported beside).
            for spread, runs in ((True, "fixed_rate_runs"), (False, "burst_rate_runs")):
                run = load.hey(
                    system.base_url + system.submit_path,
                    rate=plan.fixed_rate,
                    seconds=plan.submit_seconds,
                    server_pid=system.gateway_pid,
                    spread=spread,
                    method="POST",
                    body=system.submit_body,
                    headers=system.headers,
                )
                out[name].setdefault(runs, []).append(run.as_dict())
                system.purge()
    for round_no in range(plan.rounds):
        log(f"round {round_no + 1}/{plan.rounds}: status polling, {plan.status_seconds}s each")
        for name in _rotated(names, round_no):
            system = systems[name]
            run = load.wrk(
                status_urls[name],
                seconds=plan.status_seconds,
                server_pid=system.gateway_pid,
                headers=system.headers,
            )
            out[name].setdefault("status_runs", []).append(run.as_dict())
    for result in out.values():
        result["submit"] = _median_run(result["submit_runs"])
        result["status"] = _median_run(result["status_runs"])
        for runs in ("fixed_rate", "burst_rate"):
            if f"{runs}_runs" in result:
                result[runs] = _median_run(result[f"{runs}_runs"], "p99_ms")
        rss = result["gateway_rss_after_mb"]
        result["gateway_rss_growth_pct"] = round(100 * (rss[-1] - rss[0]) / rss[0], 2)
    return out


def _rotated(names: list[str], offset: int) -> list[str]:
    offset %= len(names)
    return names[offset:] + names[:offset]


def _submissions(system: System, seconds: float) -> load.HttpRun:
    return load.wrk(
        system.base_url + system.submit_path,
        seconds=seconds,
        server_pid=system.gateway_pid,
        method="POST",
        body=system.submit_body,
        headers=system.headers,
    )


def _status_url(system: System) -> str:
    """The status URL of one job, submitted for the purpose."""
    with httpx.Client(base_url=system.base_url, timeout=10, headers=system.headers) as client:
        method, path, payload = system.request("data")
        response = client.request(method, path, json=payload)
        response.raise_for_status()
        job_id = str(response.json().get("id") or response.json()["task_id"])
    return system.base_url + system.status_path(job_id)


def _median_run(runs: list[dict[str, Any]], by: str = "ok_per_s") -> dict[str, Any]:
    """The run with the median rate, or `by` (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda run: run[by])
    return ordered[(len(ordered) - 1) // 2]


# --- one system at a time: everything that needs its workers


def measure_workers(system: System, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(system, Baseline) and plan.mode == "full":
        log("baseline: the documented worker command, `celery -A tasks worker`")
        out["documented_worker_tasks"] = system.documented_worker_tasks()

    if plan.dispatch_jobs:  # quick runs stop here: no worker start-ups, no drains
        log(f"{system.label}: workers idle; dispatch latency, {plan.dispatch_jobs} jobs")
        system.start_workers(2)
        time.sleep(2)
        out["worker_pss_idle_mb"] = system.worker_memory()
        out["dispatch"] = dispatch_latency(system, plan.dispatch_jobs)
        system.stop_workers()
        log(f"{system.label}: each type's first job after its worker started")
        out["first_jobs"] = first_jobs(system)

    if isinstance(system, Conveyor) and plan.overhead_jobs:
        log(f"{system.label}: worker overhead, {plan.overhead_jobs} tiny jobs, 1 process")
        out["overhead"] = worker_overhead(system, plan.overhead_jobs)
        log(f"{system.label}: a job's claim and finish alone, {plan.overhead_jobs} jobs")
        out["store_writes"] = store_writes_ceiling(system, plan.overhead_jobs)
        log(f"{system.label}: composed floor (no-op with delivery, claim, finish), same jobs")
        out["floor"] = composed_floor(system, plan.overhead_jobs, system.logdir)

    out["drain"] = {}
    for concurrency in plan.drain_concurrency:
        log(f"{system.label}: drain {plan.drain_jobs} mixed jobs, {concurrency} process(es)/type")
        out["drain"][str(concurrency)] = drain(system, plan.drain_jobs, concurrency)
    system.stop()
    return out


def first_jobs(system: System, warm_jobs: int = 10, quiet_s: float = 0.5) -> dict[str, Any]:
    """Each type's first job after its worker started, against the warm jobs that follow.

    Per type: a fresh worker (1 process) is started and waited for, then jobs are sent one
    at a time, each after `quiet_s` without any; each one's latency runs from sending it
    to its finish. `ratio` is the first job's latency over the median of the next
    `warm_jobs`: what a first caller pays for imports and first-use set-up that nobody did
    before the worker said it was ready. The quiet spell before every job, not only the
    first: on these machines any request after half a second of quiet takes 3-5 ms more
    (the gateway's alone, no worker involved), which would count as a cold worker.
    """
    out: dict[str, Any] = {}
    with httpx.Client(base_url=system.base_url, timeout=30, headers=system.headers) as client:
        for kind in ("data", "cmd", "ml"):
            system.start_workers(1, kinds=(kind,))
            latencies = []
            for _ in range(1 + warm_jobs):
                time.sleep(quiet_s)
                method, path, payload = system.request(kind)
                sent = time.time()
                response = client.request(method, path, json=payload)
                response.raise_for_status()
                job_id = str(response.json().get("id") or response.json()["task_id"])
                finished = system.wait_done([job_id], timeout=120, poll_s=0.002)[job_id][1]
                latencies.append(1000 * (finished - sent))
            system.stop_workers()
            warm = statistics.median(latencies[1:])
            out[kind] = {
                "first_ms": round(latencies[0], 1),
                "warm_p50_ms": round(warm, 1),
                "ratio": round(latencies[0] / warm, 2),
            }
    out["worst_ratio"] = max(out[kind]["ratio"] for kind in ("data", "cmd", "ml"))
    return out


def dispatch_latency(system: System, jobs: int) -> dict[str, Any]:
    """Submit to worker start, one job at a time on an idle system.

    The table's figures run from sending the submit request (always positive). Those
    from its answer (`from_answer`), the issue's definition, are kept too: they are
    negative when the worker started the job before the answer reached the client.
    """
    from_sent, from_answer = [], []
    with httpx.Client(base_url=system.base_url, timeout=10, headers=system.headers) as client:
        for _ in range(jobs):
            method, path, payload = system.request("data")
            sent = time.time()
            response = client.request(method, path, json=payload)
            answered = time.time()
            response.raise_for_status()
            job_id = str(response.json().get("id") or response.json()["task_id"])
            started = system.wait_done([job_id], timeout=30, poll_s=0.002)[job_id][0]
            from_sent.append(1000 * (started - sent))
            from_answer.append(1000 * (started - answered))
    return {**_summary(from_sent), "jobs": jobs, "from_answer": _summary(from_answer)}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
        "min_ms": round(min(values), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def worker_overhead(system: Conveyor, jobs: int) -> dict[str, Any]:
    """Queue `jobs` tiny jobs, then let one data worker process drain them."""
    submitted = load.submit_many(
        system.base_url, jobs, lambda _: system.request("tiny"), headers=system.headers
    )
    ids = [job_id for job_id, _ in submitted]
    system.start_workers(1, kinds=("data",))
    seen = system.wait_done(ids, timeout=300)
    system.stop_workers()
    first = min(v[0] for v in seen.values())
    last = max(v[1] for v in seen.values())
    # Where a job's time goes: from its claim to its finish (written by the job's own
    # process), and from one job's finish to the next one's claim (the finish's commit,
    # the ack, RabbitMQ's next delivery, Celery handing it to the pool process).
    spans = sorted((start, end) for start, end, _ in seen.values())
    between = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
    return {
        "jobs": jobs,
        "seconds": round(last - first, 3),
        "jobs_per_s": round(jobs / (last - first), 1),
        "failed": sum(1 for v in seen.values() if not v[2]),
        "claim_to_finish_ms_p50": round(1000 * statistics.median(e - s for s, e in spans), 2),
        "finish_to_next_claim_ms_p50": round(1000 * statistics.median(between), 2),
    }


def store_writes_ceiling(system: Conveyor, jobs: int) -> dict[str, Any]:
    """A job's two job store writes alone: the worker's own claim and finish, one job after
    another in this process, on the system's database; no broker, no Celery, no job.

    The most tiny jobs/s one worker process could reach while every claim and every finish
    is committed (durably) before the next step, whatever the broker and Celery cost.
    """
    from conveyor_core.states import JobState
    from conveyor_core.store.worker_ops import WorkerJobStore

    ids = _queued_rows(system, jobs)
    store = WorkerJobStore(system.engine)
    started = time.perf_counter()
    for job_id in ids:
        claim = store.claim(job_id, "bench")
        assert claim is not None, f"job {job_id} could not be claimed"
        store.finish(
            job_id,
            JobState.SUCCEEDED,
            result={"rows": [{"value": 1}], "row_count": 1},
            artifacts=[],
            progress=1.0,
            attempt=claim.attempts,
        )
    seconds = time.perf_counter() - started
    return {"jobs": jobs, "seconds": round(seconds, 3), "jobs_per_s": round(jobs / seconds, 1)}


def _queued_rows(system: Conveyor, jobs: int) -> list[uuid.UUID]:
    """Insert `jobs` queued tiny `data.transform` rows, as the gateway would, without messages."""
    from conveyor_core.states import JobState
    from conveyor_core.store import Job
    from sqlalchemy import insert

    ids = [uuid.uuid4() for _ in range(jobs)]
    now = datetime.now(UTC)
    with system.engine.begin() as connection:
        connection.execute(
            insert(Job),
            [
                {"id": job_id, "type": "data.transform", "params": {"rows": [{"value": 1}]}}
                | {"state": JobState.QUEUED, "created_at": now, "updated_at": now}
                for job_id in ids
            ],
        )
    return ids


def composed_floor(system: Conveyor, jobs: int, logdir: Path) -> dict[str, Any]:
    """The least a worker with Conveyor's guarantees does per job, composed in one process:
    the Celery no-op with Conveyor's delivery settings, whose task makes the job's claim
    and finish writes on the system's database."""
    ids = _queued_rows(system, jobs)
    return bare_celery_noop(
        jobs,
        logdir,
        delivery="conveyor",
        store_url=system.database_url,
        job_ids=[str(job_id) for job_id in ids],
    )


def drain(system: System, jobs: int, concurrency: int) -> dict[str, Any]:
    """Submit `jobs` mixed small jobs at 16 connections; time until the last one finished."""
    kinds = ("data", "cmd", "ml")
    system.start_workers(concurrency)
    cpu_before = _cpu_ticks()
    started = time.time()
    submitted = load.submit_many(
        system.base_url,
        jobs,
        lambda i: system.request(kinds[i % 3]),
        timeout=600,
        headers=system.headers,
    )
    submit_s = max(t for _, t in submitted) - started
    seen = system.wait_done([job_id for job_id, _ in submitted], timeout=900)
    busy, total = (after - before for after, before in zip(_cpu_ticks(), cpu_before, strict=True))
    system.stop_workers()
    last = max(v[1] for v in seen.values())
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "submit_seconds": round(submit_s, 2),
        "seconds": round(last - started, 2),
        "failed": sum(1 for v in seen.values() if not v[2]),
        # How busy the machine's cores were (all processes, this bench included): near
        # 100 % at one process per type leaves a second process nothing to scale on.
        "cpu_busy_pct": round(100 * busy / total, 1) if total else None,
    }


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    # user nice system idle iowait irq softirq steal; guest time is inside user already.
    fields = [int(value) for value in line.split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# --- measurements without the HTTP side


def bare_celery_noop(
    jobs: int,
    logdir: Path,
    delivery: str = "default",
    *,
    store_url: str | None = None,
    job_ids: list[str] | None = None,
) -> dict[str, Any]:
    """The ceiling for worker overhead: a Celery no-op task, one process, same broker.

    `delivery="conveyor"`: with Conveyor's delivery settings (see bench/celery_noop.py).
    With `store_url`, each task claims and finishes one of the queued `job_ids` there: the
    composed floor.
    """
    os.environ["BENCH_NOOP_DELIVERY"] = delivery  # read when celery_noop is (re)loaded
    from bench import celery_noop

    importlib.reload(celery_noop)
    run = f"{delivery}-store" if store_url else delivery
    with procs.rabbitmq_vhost("conveyor-bench-noop") as broker_url:
        result = logdir / f"noop-{run}.result"
        result.unlink(missing_ok=True)  # a run before this one in the same folder
        celery_noop.app.conf.broker_url = broker_url
        with celery_noop.app.producer_or_acquire() as producer:
            messages: list[str | None] = list(job_ids) if job_ids else [None] * jobs
            for job_id in messages:
                celery_noop.noop.apply_async(args=(job_id,), producer=producer)
        env = {
            **os.environ,
            "BROKER_URL": broker_url,
            "BENCH_NOOP_COUNT": str(jobs),
            "BENCH_NOOP_RESULT": str(result),
            **({"BENCH_NOOP_STORE": store_url} if store_url else {}),
        }
        argv = [str(VENV_BIN / "celery"), "-A", "bench.celery_noop", "worker"]
        worker = procs.start(
            f"noop-worker-{run}",
            [*argv, "-Q", "bench.noop", "-c", "1", "--loglevel=warning"],
            env,
            REPO,
            logdir,
        )
        try:
            deadline = time.monotonic() + 120
            while not result.exists() or not result.read_text().endswith("\n"):
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bare Celery no-op: not done in 120s\n{worker.log()}")
                time.sleep(0.1)
        finally:
            worker.stop()
        first, last = map(float, result.read_text().split())
    return {
        "jobs": jobs,
        "seconds": round(last - first, 3),
        "jobs_per_s": round(jobs / (last - first), 1),
    }


def publish_ceiling(seconds: float, in_flight: int = 32) -> dict[str, Any]:
    """The gateway's publish step alone: its JobPublisher, `in_flight` publishes at a time.

    Persistent messages, publisher confirms, no HTTP and no job store: what RabbitMQ and
    the AMQP client allow on this machine, the most any submission path could accept.
    """
    import uvloop
    from conveyor_api.publisher import JobPublisher
    from conveyor_core.jobs import DATA_TRANSFORM, JOB_TYPES

    async def main(broker_url: str) -> dict[str, Any]:
        publisher = JobPublisher(broker_url, list(JOB_TYPES.values()), confirm_timeout_s=10)
        await publisher.start()
        async with asyncio.timeout(30):
            while not publisher.is_connected:  # noqa: ASYNC110 (it only exposes a flag)
                await asyncio.sleep(0.05)
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                await publisher.publish(DATA_TRANSFORM, uuid.uuid4())
                latencies.append(time.monotonic() - started)

        cpu = time.process_time()
        began = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        elapsed = time.monotonic() - began
        cpu = time.process_time() - cpu
        await publisher.close()
        return {
            "in_flight": in_flight,
            "messages": len(latencies),
            "msgs_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * percentile(latencies, 50), 2),
            "p99_ms": round(1000 * percentile(latencies, 99), 2),
            "cpu_ms_per_msg": round(1000 * cpu / len(latencies), 3),
        }

    with (
        procs.rabbitmq_vhost("conveyor-bench-publish") as broker_url,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        return runner.run(main(broker_url))


# Each transform case runs this many times in its process and reports the median.
TRANSFORM_REPEAT = 3


def transform(plan: Plan, workdir: Path) -> dict[str, Any]:
    def case(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "bench.transform", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout
        return dict(json.loads(out.splitlines()[-1]))

    results: dict[str, Any] = {}
    for rows in plan.transform_rows:
        log(f"data transform, {rows:,} rows: Parquet -> filter, compute, group-by")
        made = case("make", str(workdir), str(rows))
        repeat = ("--repeat", str(TRANSFORM_REPEAT))
        conveyor = case("conveyor", str(workdir), str(rows), *repeat)
        loop = case("loop", str(workdir), str(rows), "--batch", str(plan.loop_batch), *repeat)
        if conveyor["digest"] != loop["digest"]:
            raise RuntimeError(f"transform results differ: {conveyor} vs {loop}")
        results[str(rows)] = {"parquet_bytes": made["bytes"], "conveyor": conveyor, "loop": loop}
    return results


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    with contextlib.suppress(Exception):
        info["rabbitmq"] = procs.rabbitmqctl("version").strip()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(procs.POSTGRES_ADMIN_DSN) as connection:
            info["postgresql"] = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    from importlib.metadata import version

    info["packages"] = {
        p: version(p) for p in ("celery", "fastapi", "uvicorn", "polars", "sqlalchemy", "aio-pika")
    }
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    info["revision"] = revision.stdout.strip()  # "-dirty": uncommitted changes were measured
    info["wrk"] = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    )
    return info


# --- the systems beside the baseline and Conveyor: its durable Celery peer, two gateways

# Every system, in the order they are measured. `--quick` (the CI smoke run, ~90 s) leaves
# out the second gateway, a full-run row; the peer's gateway adds ~15 s to it (2026-12-05).
SYSTEMS = ("baseline", "sqlite", "postgres", PEER, TWO_GATEWAYS)
QUICK_SYSTEMS = ("baseline", "sqlite", "postgres", PEER)
GATEWAY_PROCESSES = 2  # of the TWO_GATEWAYS system


def measure_peer(system: CeleryDb, plan: Plan) -> dict[str, Any]:
    """The Celery peer's worker runs: Conveyor's worker overhead and drain, its way."""
    out: dict[str, Any] = {}
    if plan.overhead_jobs:
        log(f"{system.label}: tiny jobs, {plan.overhead_jobs} queued, 1 process")
        out["overhead"] = peer_tiny_jobs(system, plan.overhead_jobs)
    out["drain"] = {}
    for concurrency in plan.drain_concurrency:
        log(f"{system.label}: drain {plan.drain_jobs} mixed jobs, {concurrency} process(es)/type")
        out["drain"][str(concurrency)] = drain(system, plan.drain_jobs, concurrency)
    if system.worker_tasks:
        out["worker_tasks"] = system.worker_tasks
        out["stored_results"] = system.stored_results()  # celery_taskmeta rows by state
    system.stop()
    return out


def peer_tiny_jobs(system: CeleryDb, jobs: int) -> dict[str, Any]:
    """Queue `jobs` tiny transform jobs, then let one worker with one process drain them;
    the first start and the last finish come from the probe (tasks/probe.py)."""
    submitted = load.submit_many(
        system.base_url, jobs, lambda _: system.request("tiny"), headers=system.headers
    )
    system.start_workers(1, kinds=("data",))
    seen = system.wait_done([job_id for job_id, _ in submitted], timeout=300)
    system.stop_workers()
    first = min(v[0] for v in seen.values())
    last = max(v[1] for v in seen.values())
    return {
        "jobs": jobs,
        "seconds": round(last - first, 3),
        "jobs_per_s": round(jobs / (last - first), 1),
    }


def _open_system(name: str, workdir: Path, cleanup: contextlib.ExitStack) -> System:
    """A system on its own vhost (and PostgreSQL database), removed with `cleanup`."""
    broker_url = cleanup.enter_context(procs.rabbitmq_vhost(f"conveyor-bench-{name}"))
    logdir = workdir / name
    logdir.mkdir()
    system: System
    if name == "baseline":
        system = Baseline(broker_url, logdir)
    elif name == PEER:
        system = CeleryDb(broker_url, logdir, cleanup.enter_context(procs.postgres_database()))
    elif name == TWO_GATEWAYS:
        database_url = cleanup.enter_context(procs.postgres_database())
        system = ConveyorGateways(broker_url, logdir, database_url, GATEWAY_PROCESSES)
    else:
        database_url = (
            cleanup.enter_context(procs.postgres_database())
            if name == "postgres"
            else f"sqlite:///{logdir / 'conveyor.db'}"
        )
        label = "Conveyor (SQLite)" if name == "sqlite" else "Conveyor (PostgreSQL)"
        system = Conveyor(broker_url, logdir, database_url, label)
    cleanup.callback(system.stop)
    return system


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the under-2-minute CI variant")
    parser.add_argument(
        "--only",
        choices=SYSTEMS,
        action="append",
        help="measure only these systems (repeatable; default all)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="only rebuild the table, latest.md and latest.png from a results file",
    )
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        table = report.build(saved)
        print(report.text_table(table))
        report.write_markdown(saved, table, REPO / "bench" / "results" / "latest.md")
        report.write_chart(table, REPO / "bench" / "results" / "latest.png")
        return 0
    plan = QUICK if args.quick else FULL
    load.require_wrk()
    if plan.fixed_rate:
        load.require_hey()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup below runs

    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "machine": machine(),
        "systems": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    ok = False
    try:
        wanted = args.only or (QUICK_SYSTEMS if args.quick else SYSTEMS)
        with contextlib.ExitStack() as cleanup:
            systems = {name: _open_system(name, workdir, cleanup) for name in wanted}
            http = measure_http(systems, plan)
            for name, system in systems.items():
                if isinstance(system, ConveyorGateways):  # a row of the HTTP rounds only:
                    system.stop()  # not left idling beside the others' worker runs
                    results["systems"][name] = http[name]
            for name, system in systems.items():
                if isinstance(system, ConveyorGateways):
                    continue
                if isinstance(system, CeleryDb):
                    results["systems"][name] = {**http[name], **measure_peer(system, plan)}
                else:
                    results["systems"][name] = {**http[name], **measure_workers(system, plan)}
        if plan.noop_jobs:
            log(f"bare Celery no-op, {plan.noop_jobs} tasks, 1 process")
            results["noop"] = bare_celery_noop(plan.noop_jobs, workdir)
            log(f"Celery no-op with Conveyor's delivery settings, {plan.noop_jobs} tasks")
            results["noop_conveyor_delivery"] = bare_celery_noop(
                plan.noop_jobs, workdir, delivery="conveyor"
            )
        if plan.publish_seconds:
            log(f"publish + confirm alone, {plan.publish_seconds}s at 32 in flight")
            results["publish_ceiling"] = publish_ceiling(plan.publish_seconds)
        results["transform"] = transform(plan, workdir)
        ok = True
    finally:
        results["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
        results["machine"]["load_avg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench failed; logs kept in {workdir}", file=sys.stderr)

    table = report.build(results)
    results["table"] = table
    stamp = started.strftime("%Y-%m-%dT%H-%M-%S")
    out_dir = REPO / "bench" / "results"
    json_path = out_dir / f"{stamp}{'-quick' if args.quick else ''}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(report.text_table(table))
    print(f"\nresults: {json_path.relative_to(REPO)} ({results['seconds']} s)")
    if not args.quick and not args.only:
        report.write_markdown(results, table, out_dir / "latest.md")
        report.write_chart(table, out_dir / "latest.png")
        print("wrote bench/results/latest.md and latest.png")
    collapsed = report.collapsed(table)
    for row in collapsed:
        print(
            f"COLLAPSE: {row['metric']}: {row['ratio']} (target {row['target']})", file=sys.stderr
        )
    return 1 if collapsed else 0


if __name__ == "__main__":
    sys.exit(main())
