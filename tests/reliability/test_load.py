"""10,000 mixed jobs through the gateway, two workers per type: every job accounted for.

Prints what it submitted and counted. Memory is read from /proc after a warm-up tenth of
the load and again at the end, for the gateway and each worker's whole process tree.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.store import Job
from conveyor_core.store.engine import make_sync_engine
from sqlalchemy import func, select
from support.procs import children
from support.stack import WORKERS, Stack, running_stack, wait_until_drained

TOTAL = 10_000
WARM_UP = TOTAL // 10
SUBMITTERS = 16
BAD_EVERY = 200  # one data job in 200 fails at the worker (a type error), with a reason


@pytest.fixture
def stack(tmp_path):
    with running_stack(
        tmp_path,
        "postgres",
        workers=(),
        CONVEYOR_SUBMIT_RATE_PER_S="0",
        CONVEYOR_MAX_QUEUED_PER_KEY="0",
    ) as running:
        for kind in WORKERS:
            running.start_worker(kind)
            running.start_worker(kind, name=f"{kind}-2")
        running.wait_ready()
        for kind in WORKERS:
            running.wait_for_log(f"{kind}-2", "ready.", timeout=120)
        yield running


def _job(index: int) -> dict:
    if index % 20 == 0:
        return {"type": "ml.train", "params": {"dataset": "iris", "model": "logistic_regression"}}
    if index % 2 == 0:
        value = "text" if index % BAD_EVERY == 2 else index
        return {
            "type": "data.transform",
            "params": {
                "rows": [{"a": value}, {"a": 1}],
                "steps": [
                    {"op": "compute", "column": "b", "left": "a", "operator": "mul", "right": 2}
                ],
            },
        }
    return {"type": "cmd.run", "params": {"command": "echo", "args": [str(index)]}}


def _rss_mb(pid: int) -> float:
    total = 0
    for member in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
        )
    return total / 1024


def _submit_all(stack: Stack, indexes: range) -> list[str]:
    def submit(chunk: list[int]) -> list[str]:
        with stack.client() as client:
            ids = []
            for index in chunk:
                response = client.post("/v1/jobs", json=_job(index))
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            return ids

    chunks = [list(indexes[i::SUBMITTERS]) for i in range(SUBMITTERS)]
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return list(itertools.chain.from_iterable(pool.map(submit, chunks)))


def _wait_until_all_finished(stack: Stack, timeout: float) -> dict[str, int]:
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            counts = dict(
                connection.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
        if not counts.get("queued") and not counts.get("running"):
            return counts
        assert time.monotonic() < deadline, f"still unfinished after {timeout}s: {counts}"
        time.sleep(2)


@pytest.mark.timeout(2400)  # the whole run: minutes on 2 cores, bounded by the waits below
def test_ten_thousand_mixed_jobs_are_all_accounted_for(stack: Stack):
    started = time.monotonic()
    submitted = _submit_all(stack, range(WARM_UP))
    _wait_until_all_finished(stack, timeout=600)
    pids = {name: service.process.pid for name, service in stack.services.items()}
    warm = {name: _rss_mb(pid) for name, pid in pids.items()}
    submitted += _submit_all(stack, range(WARM_UP, TOTAL))
    counts = _wait_until_all_finished(stack, timeout=1800)
    took = time.monotonic() - started
    end = {name: _rss_mb(pid) for name, pid in pids.items()}

    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    with engine.connect() as connection:
        failed_without_reason = connection.execute(
            select(func.count()).where(Job.state == "failed", Job.error.is_(None))
        ).scalar_one()
        by_type = dict(connection.execute(select(Job.type, func.count()).group_by(Job.type)).all())
    expected_failures = len(
        [i for i in range(TOTAL) if i % 20 and i % 2 == 0 and i % BAD_EVERY == 2]
    )
    print(
        f"{len(submitted)} jobs submitted and finished in {took:.0f}s; by state {counts}; "
        f"by type {by_type}"
    )
    print(
        "memory (MB, process tree) after warm-up -> at the end: "
        + ", ".join(f"{name} {warm[name]:.0f} -> {end[name]:.0f}" for name in sorted(pids))
    )

    assert len(set(submitted)) == TOTAL
    assert counts.get("succeeded", 0) + counts.get("failed", 0) == TOTAL
    assert counts.get("failed", 0) == expected_failures
    assert failed_without_reason == 0
    expected_queues = {n for t in JOB_TYPES.values() for n in (t.queue, t.dead_letter_queue)}
    queues = wait_until_drained(stack.vhost)
    assert set(queues) == expected_queues
    for name in pids:
        # Flat: a leak of even a few hundred bytes per job would add tens of MB over 9,000.
        assert end[name] <= warm[name] * 1.25 + 20, (
            f"{name} grew {warm[name]:.0f} -> {end[name]:.0f} MB"
        )
