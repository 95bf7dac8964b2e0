"""A submission publishes its message while its row commits, so a worker can get the
message first. It waits for the row and runs the job once; a message whose row never comes
is dropped; a row that came too late for that wait is left for the maintenance loop."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conveyor_api import service
from conveyor_api.publisher import JobPublisher
from conveyor_api.service import JobService
from conveyor_api.unit_of_work import open_work_runner
from conveyor_core.jobs import CMD_RUN, DATA_TRANSFORM, JOB_TYPES, JobType
from conveyor_core.jobs.data import TransformResult
from conveyor_core.settings import Settings
from conveyor_core.states import JobState
from conveyor_core.store import Job
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.worker import runtime
from conveyor_core.worker.context import JobContext
from conveyor_core.worker.runtime import JobRunner
from sqlalchemy import func, select
from support.rows import insert_job
from support.stack import Stack, running_stack

ECHO = {"command": "echo", "args": ["late row"], "timeout_s": 60, "stdin": None}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with running_stack(tmp_path_factory.mktemp("late-row"), "postgres", workers=("cmd",)) as up:
        yield up


def publish_only(broker_url: str, job_type: JobType, job_id: uuid.UUID) -> None:
    """What a submission's publish does, with no row written."""

    async def publish() -> None:
        publisher = JobPublisher(broker_url, list(JOB_TYPES.values()), 5.0)
        await publisher._connect()  # at once, not in the background as the gateway does
        try:
            await publisher.publish(job_type, job_id)
        finally:
            await publisher.close()

    asyncio.run(publish())


def test_a_message_that_arrives_before_its_row_waits_for_it_and_runs_once(stack: Stack):
    job_id = uuid.uuid4()
    publish_only(stack.env["CONVEYOR_BROKER_URL"], CMD_RUN, job_id)
    time.sleep(1.0)  # the idle worker has the message by now, and no row to claim
    insert_job(make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"]), id=job_id, params=ECHO)
    with stack.client() as client:
        job = stack.wait_for(client, str(job_id), {"succeeded", "failed"}, timeout=30)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["stdout"] == "late row\n" and job["attempts"] == 1


def tiny(params: Any, ctx: JobContext) -> TransformResult:
    return TransformResult(row_count=0, columns=[], artifact=None, duration_s=0.0)


def test_a_message_whose_row_never_comes_is_dropped_after_the_wait(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runtime, "ROW_WAIT_S", 0.5)
    runner = JobRunner(
        DATA_TRANSFORM, tiny, Settings(database_url=database_url, artifact_url=str(tmp_path))
    )
    started = time.monotonic()
    runner.execute(uuid.uuid4(), "worker@test")
    waited = time.monotonic() - started
    assert 0.5 <= waited < 2.0, waited
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Job)) == 0
    engine.dispose()


def test_a_row_committed_during_the_wait_is_claimed_and_run(database_url: str, tmp_path: Path):
    runner = JobRunner(
        DATA_TRANSFORM, tiny, Settings(database_url=database_url, artifact_url=str(tmp_path))
    )
    engine = make_sync_engine(database_url)
    job_id = uuid.uuid4()
    late_insert = threading.Timer(
        0.3,
        lambda: insert_job(
            engine, id=job_id, type=DATA_TRANSFORM.name, params={"steps": [], "rows": [{"x": 1}]}
        ),
    )
    late_insert.start()
    runner.execute(job_id, "worker@test")
    late_insert.join()
    with engine.connect() as connection:
        state, attempts = connection.execute(
            select(Job.state, Job.attempts).where(Job.id == job_id)
        ).one()
    engine.dispose()
    assert (state, attempts) == (JobState.SUCCEEDED, 1)


class ConfirmsAfter:
    """A publisher whose confirms take `delay_s`: only the service's timing is under test."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def publish(self, job_type: JobType, job_id: uuid.UUID) -> None:
        await asyncio.sleep(self.delay_s)


def test_a_submission_slower_than_half_the_row_wait_is_left_undispatched(
    database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(service, "ROW_WAIT_S", 0.4)

    async def submit_both() -> tuple[uuid.UUID, uuid.UUID]:
        runner = open_work_runner(database_url)
        publisher = ConfirmsAfter(0.0)
        jobs = JobService(runner, publisher)  # type: ignore[arg-type]
        try:
            quick = (await jobs.submit(CMD_RUN, ECHO)).id
            publisher.delay_s = 0.3  # longer than half of ROW_WAIT_S
            slow = (await jobs.submit(CMD_RUN, ECHO)).id
            await jobs.dispatched.flush()
        finally:
            await runner.close()
        return quick, slow

    quick, slow = asyncio.run(submit_both())
    engine = make_sync_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.id, Job.dispatched_at).where(Job.id.in_([quick, slow]))
        ).all()
    dispatched = {job_id: at for job_id, at in rows}
    engine.dispose()
    # The slow one's message may have been dropped by a worker tired of waiting for its
    # row: left undispatched, the maintenance loop publishes it again.
    assert dispatched[quick] is not None and dispatched[slow] is None
