"""Worker state changes are guarded: no double run, no cancel undone (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from conveyor_core.states import JobState
from conveyor_core.store import Job
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.migrate import upgrade_to_head
from conveyor_core.store.worker_ops import WorkerJobStore
from support.rows import insert_job
from support.stack import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> Iterator[WorkerJobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade_to_head(url)
        yield WorkerJobStore(make_sync_engine(url))
    else:
        with postgres_database() as url:
            upgrade_to_head(url)
            engine = make_sync_engine(url)
            yield WorkerJobStore(engine)
            engine.dispose()


def _queued_job(store: WorkerJobStore) -> uuid.UUID:
    return insert_job(store.engine)


def test_claim_counts_attempts_and_a_finished_job_is_never_claimed_again(store):
    job_id = _queued_job(store)
    assert store.claim(job_id, "w1").attempts == 1
    assert store.claim(job_id, "dup") is None  # a duplicate first delivery: not while running
    # A redelivery takes over a running job only once its heartbeat has been silent a while.
    assert store.claim(job_id, "w2", takeover_after_s=60) is None
    assert store.claim(job_id, "w2", takeover_after_s=0).attempts == 2
    assert store.beat(job_id, 0.1, attempt=1).still_running is False  # the superseded run
    assert not store.finish(job_id, JobState.FAILED, error="superseded", attempt=1)
    assert store.finish(job_id, JobState.SUCCEEDED, result={"ok": True}, progress=1.0, attempt=2)
    assert store.claim(job_id, "w3", takeover_after_s=0) is None
    assert not store.finish(job_id, JobState.FAILED, error="late duplicate")
    assert store.current_state(job_id) == "succeeded"


def test_heartbeat_reports_a_cancel_request_and_progress(store):
    job_id = _queued_job(store)
    store.claim(job_id, "w1")
    assert store.beat(job_id, 0.5).cancel_requested is False
    with store.engine.begin() as connection:
        connection.execute(
            Job.__table__.update().where(Job.id == job_id).values(cancel_requested=True)
        )
    beat = store.beat(job_id, 0.6)
    assert beat.still_running and beat.cancel_requested


def test_unknown_job_is_not_claimed(store):
    assert store.claim(uuid.uuid4(), "w1") is None
