"""The gateway repairs what a crash leaves behind: undispatched rows, jobs without heartbeat."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from conveyor_core.settings import Settings
from conveyor_core.states import JobState
from conveyor_core.store import Job, utcnow
from conveyor_core.store.engine import make_sync_engine
from sqlalchemy import select
from support.maintenance import run_maintenance
from support.rows import insert_job
from support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with running_stack(
        tmp_path_factory.mktemp("repairs"),
        "postgres",
        workers=("cmd",),
        CONVEYOR_MAINTENANCE_INTERVAL_S="0.5",
        CONVEYOR_UNDISPATCHED_AFTER_S="1",
        CONVEYOR_STALE_JOB_AFTER_S="3",
    ) as running:
        yield running


def _insert(stack: Stack, **values) -> uuid.UUID:
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    return insert_job(
        engine,
        params={"command": "echo", "args": ["repaired"], "timeout_s": 60, "stdin": None},
        **values,
    )


def test_a_committed_row_whose_message_was_lost_is_published_again(stack: Stack):
    # What a gateway killed between commit and publisher confirm leaves behind.
    job_id = _insert(stack, state=JobState.QUEUED, dispatched_at=None)
    with stack.client() as client:
        job = stack.wait_for(client, str(job_id), {"succeeded", "failed"}, timeout=30)
    assert job["state"] == "succeeded" and job["result"]["stdout"] == "repaired\n"
    assert job["attempts"] == 1


def test_a_normal_submission_is_marked_dispatched_and_runs_once(stack: Stack):
    with stack.client() as client:
        job_id = stack.submit(client, "cmd.run", {"command": "echo", "args": ["once"]})["id"]
        job = stack.wait_for(client, job_id, {"succeeded"}, timeout=30)
        time.sleep(2)  # several maintenance rounds
        assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == job["attempts"] == 1
    with make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"]).connect() as connection:
        dispatched = connection.execute(
            select(Job.dispatched_at).where(Job.id == uuid.UUID(job_id))
        ).scalar_one()
    assert dispatched is not None


def test_a_running_job_without_heartbeat_is_failed_with_the_reason(stack: Stack):
    long_ago = utcnow() - timedelta(hours=1)
    job_id = _insert(
        stack,
        state=JobState.RUNNING,
        attempts=1,
        started_at=long_ago,
        heartbeat_at=long_ago,
        dispatched_at=long_ago,
    )
    with stack.client() as client:
        job = stack.wait_for(client, str(job_id), {"failed"}, timeout=15)
    assert "no heartbeat" in job["error"]


def test_a_running_job_with_a_live_heartbeat_is_left_alone(stack: Stack):
    with stack.client() as client:
        job_id = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["6"]})["id"]
        job = stack.wait_for(client, job_id, {"succeeded", "failed"}, timeout=30)
    # It ran twice as long as CONVEYOR_STALE_JOB_AFTER_S, heartbeating all along.
    assert job["state"] == "succeeded", job["error"]


@pytest.mark.parametrize(("attempts", "expected"), [(1, JobState.RUNNING), (3, JobState.FAILED)])
def test_the_stale_job_sweep_leaves_a_handed_over_job_to_the_requeue_step(
    database_url: str, attempts: int, expected: JobState
):
    # Its heartbeat can pass the cutoff between the requeue step and this one, in one round:
    # while it has attempts left, it is the requeue step's (next round), never failed here.
    engine = make_sync_engine(database_url)
    lost = utcnow() - timedelta(seconds=60)
    job_id = insert_job(
        engine,
        state=JobState.RUNNING,
        attempts=attempts,
        heartbeat_at=lost,
        handed_over_at=lost,
    )
    settings = Settings(database_url=database_url, stale_job_after_s=30, max_attempts=3)
    failed = run_maintenance(settings, lambda maintenance: maintenance.fail_stale_running())
    with engine.connect() as connection:
        state = connection.scalar(select(Job.state).where(Job.id == job_id))
    engine.dispose()
    assert (failed, state) == (int(expected is JobState.FAILED), expected)
