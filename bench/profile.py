"""Profile the gateway's submit hot path with py-spy while wrk loads it.

    uv run --with py-spy==0.4.3 python -m bench.profile [--database postgres] [--seconds 10]
        [--target submit|status|worker] [--kind tiny|data|cmd|ml] [--idle]

Starts Conveyor's gateway alone (SQLite or a fresh PostgreSQL database, own vhost) and
samples it with py-spy while wrk POSTs the bench's small job (`submit`) or GETs one job's
status (`status`) at 32 connections; or queues jobs of one kind (`--kind`: tiny
transforms by default, or the drain's data, cmd or ml job) and samples their worker, main
and pool processes, draining them (`worker`; `--idle` counts waiting threads too, for
where a job's wall time goes). Prints where the samples fall: by area
(the package of the innermost frame), then the functions holding the most (inclusive,
then own). The collapsed stacks are kept in bench/results/profile-<target>-<db>.txt (a
flame graph's input).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import load, procs
from bench.procs import REPO
from bench.systems import Conveyor

# The job the bench's `Conveyor.request` sends for a kind, and the worker that runs it.
WORKER_OF_KIND = {"tiny": "data", "data": "data", "cmd": "cmd", "ml": "ml"}

# Where a sample's time goes: the package of its innermost frame that is one of these
# (first match wins), so time in a library called from our code counts for the library.
AREAS = [
    ("json / hashlib / uuid (stdlib)", ("json/", "hashlib", "uuid.py")),
    ("logging", ("logging/",)),
    ("prometheus_client (metrics)", ("prometheus_client/",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("aiosqlite + sqlite3 (its threads)", ("aiosqlite/", "sqlite3/")),
    ("psycopg", ("psycopg",)),
    ("aio-pika / aiormq / pamqp (publish)", ("aio_pika/", "aiormq/", "pamqp/")),
    ("Celery / kombu / billiard / py-amqp", ("celery/", "kombu/", "billiard/", "amqp/")),
    ("polars", ("polars/",)),
    ("conveyor_api (our code)", ("conveyor_api/", "conveyor_core/")),
    ("FastAPI routing + dependencies", ("fastapi/",)),
    ("Starlette (middleware, responses)", ("starlette/",)),
    ("uvicorn (HTTP protocol)", ("uvicorn/", "httptools")),
    ("anyio (thread pool hops)", ("anyio/",)),
    ("threads waiting / handing over", ("threading.py", "queue.py")),
    ("asyncio / uvloop (event loop)", ("asyncio/",)),
]


def area_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for area, markers in AREAS:
            if any(marker in frame for marker in markers):
                return area
    return "other"


def summarise(collapsed: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
        areas[area_of(frames)] += samples
    out = [f"{total} samples", "\n-- by area (the innermost frame's package)"]
    out += [f"{100 * n / total:5.1f}%  {area}" for area, n in areas.most_common()]
    for title, counter in (("inclusive", inclusive), ("own", own)):
        out.append(f"\n-- top {top} by {title} share")
        out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--target", choices=["submit", "status", "worker"], default="submit")
    parser.add_argument("--kind", choices=list(WORKER_OF_KIND), default="tiny")
    parser.add_argument(
        "--idle", action="store_true", help="sample waiting threads too: wall time, not CPU"
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy missing: uv run --with py-spy==0.4.3 python -m bench.profile")
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
    out = REPO / "bench" / "results" / f"profile-{args.target}-{args.database}.txt"
    if args.target == "worker" and args.kind != "tiny":
        out = out.with_name(f"profile-worker-{args.kind}-{args.database}.txt")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker_url = cleanup.enter_context(procs.rabbitmq_vhost("conveyor-bench-profile"))
        database_url = (
            cleanup.enter_context(procs.postgres_database())
            if args.database == "postgres"
            else f"sqlite:///{workdir / 'conveyor.db'}"
        )
        system = Conveyor(broker_url, workdir, database_url, f"profile-{args.database}")
        cleanup.callback(system.stop)
        system.start_gateway()
        if args.target == "worker":
            summary = profile_worker(system, py_spy, out, args.seconds, args.kind, args.idle)
        else:
            summary = profile_gateway(system, py_spy, out, args.seconds, args.target)
    print(summary)
    print(summarise(out))
    print(f"\ncollapsed stacks: {out.relative_to(REPO)}")


def py_spy_record(py_spy: str, pid: int, seconds: int, out: Path, *extra: str) -> None:
    subprocess.run(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            *extra,
        ],
        check=True,
        capture_output=True,
        timeout=seconds + 60,
    )


def profile_gateway(system: Conveyor, py_spy: str, out: Path, seconds: int, target: str) -> str:
    url = system.base_url + system.submit_path
    request: dict[str, Any] = {"method": "POST", "body": system.submit_body}
    if target == "status":
        with httpx.Client(base_url=system.base_url, headers=system.headers) as client:
            submitted = client.post(
                system.submit_path,
                content=system.submit_body,
                headers={"Content-Type": "application/json"},
            )
            submitted.raise_for_status()
        url = system.base_url + system.status_path(submitted.json()["id"])
        request = {"method": "GET"}
    load.wrk(url, seconds=1, server_pid=system.gateway_pid, headers=system.headers, **request)
    result: dict[str, load.HttpRun] = {}

    def run_load() -> None:
        result["run"] = load.wrk(
            url,
            seconds=seconds + 2,
            server_pid=system.gateway_pid,
            headers=system.headers,
            **request,
        )

    loader = threading.Thread(target=run_load)
    loader.start()
    # --gil: only the thread holding the GIL, i.e. Python's CPU time, not threads waiting
    # (the event loop in epoll, the store thread in fsync).
    py_spy_record(py_spy, system.gateway_pid, seconds, out, "--gil")
    loader.join(timeout=seconds + 60)
    system.purge()
    return f"load during profile: {result.get('run')}"


def profile_worker(
    system: Conveyor, py_spy: str, out: Path, seconds: int, kind: str, idle: bool = False
) -> str:
    """Queue jobs of `kind`, then sample their worker (main and pool process) draining them."""
    jobs = 3000
    submitted = load.submit_many(
        system.base_url, jobs, lambda _: system.request(kind), headers=system.headers
    )
    worker = WORKER_OF_KIND[kind]
    system.start_workers(1, kinds=(worker,))
    started = time.monotonic()
    extra = ("--subprocesses", "--idle") if idle else ("--subprocesses",)
    py_spy_record(py_spy, system.workers[worker].pid, seconds, out, *extra)
    elapsed = time.monotonic() - started
    done = system.times([job_id for job_id, _ in submitted])
    finished = sum(1 for _, end, _ in done.values() if end is not None)
    system.stop_workers()
    system.purge()
    return f"worker finished {finished} {kind} jobs in {elapsed:.1f} s while sampled"


if __name__ == "__main__":
    main()
