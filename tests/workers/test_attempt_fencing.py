"""A superseded run cannot touch the job it lost: its files are never the published ones.

A run that stops dead (a paused VM, a long GC, SIGSTOP) renews no lease, so another worker
takes its job over. When it wakes up it goes on where it was, writes its files and tries to
record its outcome. The outcome was always fenced by attempt; its files used to land on the
same path as the winner's and overwrite them after the job had succeeded. Each attempt now
writes its own folder, and only the attempt that records the outcome is ever published.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conveyor_core.artifact_paths import attempt_artifact_folder
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import DATA_TRANSFORM
from conveyor_core.jobs.data import TransformResult
from conveyor_core.settings import Settings
from conveyor_core.states import JobState
from conveyor_core.store import Job
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.worker_ops import WorkerJobStore
from conveyor_core.worker.context import JobContext
from conveyor_core.worker.runtime import JobRunner
from sqlalchemy import select
from support.rows import insert_job

OUTPUT = "output.parquet"
FIRST_RUN_STALLS_S = 2.0  # the test stops the first run's process inside this


def write_own_bytes(params: Any, ctx: JobContext) -> TransformResult:
    """Writes which attempt it is: the bytes tell whose file a reader gets."""
    if ctx.attempt == 1:
        time.sleep(FIRST_RUN_STALLS_S)
    with ctx.open_artifact(OUTPUT, "wb") as handle:
        handle.write(f"attempt {ctx.attempt}".encode())
    return TransformResult(row_count=0, columns=[], artifact=OUTPUT, duration_s=0.0)


@pytest.fixture
def store(database_url: str) -> Iterator[WorkerJobStore]:
    engine = make_sync_engine(database_url)
    yield WorkerJobStore(engine)
    engine.dispose()


def worker_settings(database_url: str, root: Path) -> Settings:
    return Settings(database_url=database_url, artifact_url=str(root), heartbeat_interval_s=0.3)


def runner(database_url: str, root: Path) -> JobRunner:
    return JobRunner(DATA_TRANSFORM, write_own_bytes, worker_settings(database_url, root))


def transform_job(store: WorkerJobStore, source: str | None = None) -> uuid.UUID:
    params: dict[str, Any] = {"steps": []}
    params |= {"source": source} if source else {"rows": [{"x": 1}]}
    return insert_job(store.engine, type=DATA_TRANSFORM.name, params=params)


def row(store: WorkerJobStore, job_id: uuid.UUID) -> Any:
    with store.engine.connect() as connection:
        return connection.execute(select(Job.__table__).where(Job.id == job_id)).one()


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_resumed_superseded_run_does_not_replace_the_winners_files(
    store: WorkerJobStore, database_url: str, tmp_path: Path
):
    root = tmp_path / "artifacts"
    job_id = transform_job(store)
    first = multiprocessing.get_context("fork").Process(
        target=lambda: runner(database_url, root).execute(job_id, "data@a/1")
    )
    first.start()
    try:
        wait_until(lambda: store.current_state(job_id) == JobState.RUNNING)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGSTOP)  # frozen mid-run: its heartbeat stops too

        # Its message comes back to another worker, which takes the silent run over.
        second = runner(database_url, root)
        second.execute(job_id, "data@b/2", redelivered=True)
        won = row(store, job_id)
        assert (won.state, won.attempts, won.artifacts) == ("succeeded", 2, [OUTPUT])
        published = store.artifact_location(job_id, OUTPUT)
        assert published is not None
        artifacts = ArtifactStore(str(root))
        with artifacts.open(published) as handle:
            assert handle.read() == b"attempt 2"

        os.kill(first.pid, signal.SIGCONT)  # wakes up, writes its file, tries to finish
        first.join(timeout=30)
        assert first.exitcode == 0
    finally:
        if first.is_alive():
            os.kill(first.pid or 0, signal.SIGKILL)

    assert store.artifact_location(job_id, OUTPUT) == published
    with artifacts.open(published) as handle:
        assert handle.read() == b"attempt 2"
    assert row(store, job_id).state == "succeeded"
    assert not artifacts.exists(attempt_artifact_folder(job_id, 1))  # the loser cleaned up


def test_a_source_naming_a_job_reads_the_winning_attempts_file(
    store: WorkerJobStore, database_url: str, tmp_path: Path
):
    root = tmp_path / "artifacts"
    producer = transform_job(store)
    store.claim(producer, "data@a/1")
    store.claim(producer, "data@b/2", takeover_after_s=0)
    artifacts = ArtifactStore(str(root))
    for attempt in (1, 2):
        path = f"{attempt_artifact_folder(producer, attempt)}/{OUTPUT}"
        with artifacts.open(path, "wb") as handle:
            handle.write(f"attempt {attempt}".encode())

    reader = transform_job(store, source=f"jobs/{producer}/{OUTPUT}")
    seen: list[str] = []

    def record_source(params: Any, ctx: JobContext) -> TransformResult:
        seen.append(params.source)
        return TransformResult(row_count=0, columns=[], duration_s=0.0)

    unfinished = JobRunner(DATA_TRANSFORM, record_source, worker_settings(database_url, root))
    unfinished.execute(reader, "data@c/3")
    failed = row(store, reader)
    assert failed.state == "failed" and seen == []
    assert f"job {producer} has no artifact {OUTPUT!r}" in failed.error

    assert store.finish(producer, JobState.SUCCEEDED, artifacts=[OUTPUT], attempt=2)
    second_reader = transform_job(store, source=f"jobs/{producer}/{OUTPUT}")
    unfinished.execute(second_reader, "data@c/3")
    assert row(store, second_reader).state == "succeeded"
    assert seen == [f"{attempt_artifact_folder(producer, 2)}/{OUTPUT}"]
