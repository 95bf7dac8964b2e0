"""Worker state changes are guarded: no double run, no cancel undone (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conveyor_core.states import JobState
from conveyor_core.store import Job, JobEvent, utcnow
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.worker_ops import OutputLine, WorkerJobStore
from sqlalchemy import select
from support.rows import insert_job


@pytest.fixture
def store(database_url: str) -> Iterator[WorkerJobStore]:
    engine = make_sync_engine(database_url)
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


def _events(store: WorkerJobStore, job_id: uuid.UUID) -> list[tuple[int, str, dict]]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(JobEvent.seq, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.seq)
        ).all()
    return [tuple(row) for row in rows]


def test_each_change_stores_its_event_numbered_in_the_same_write(store):
    job_id = _queued_job(store)
    store.claim(job_id, "w1")
    store.beat(job_id, 0.0)  # liveness only: no event
    store.beat(job_id, 0.5, progress_changed=True)
    assert store.append_output(
        job_id, [OutputLine("stdout", "hello", utcnow()), OutputLine("stderr", "oops", utcnow())]
    )
    assert store.finish(job_id, JobState.FAILED, error="boom")
    # Nothing is added once the job is final: not a late line, not a duplicate outcome.
    assert not store.append_output(job_id, [OutputLine("stdout", "late", utcnow())])
    assert not store.finish(job_id, JobState.SUCCEEDED)
    assert _events(store, job_id) == [
        (1, "state", {"state": "running", "attempts": 1, "error": None}),
        (2, "progress", {"progress": 0.5}),
        (3, "output", {"stream": "stdout", "line": "hello"}),
        (4, "output", {"stream": "stderr", "line": "oops"}),
        (5, "state", {"state": "failed", "attempts": 1, "error": "boom"}),
    ]
    with store.engine.connect() as connection:
        assert connection.scalar(select(Job.event_seq).where(Job.id == job_id)) == 5


def test_concurrent_writers_number_one_jobs_events_without_gap_or_clash(store):
    # The heartbeat thread and the job's output flushes write at the same time.
    job_id = _queued_job(store)
    store.claim(job_id, "w1")

    def write(worker: int) -> None:
        for i in range(20):
            if worker == 0:
                store.beat(job_id, i / 20, progress_changed=True)
            else:
                line = OutputLine("stdout", f"{worker}:{i}", utcnow())
                store.append_output(job_id, [line, line])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    events = _events(store, job_id)
    assert [seq for seq, _, _ in events] == list(range(1, 1 + 1 + 20 + 3 * 20 * 2))
    for worker in (1, 2, 3):  # each writer's lines are in the order it wrote them
        mine = [
            data["line"]
            for _, kind, data in events
            if data.get("line", "").startswith(f"{worker}:")
        ]
        assert mine == [f"{worker}:{i}" for i in range(20) for _ in range(2)]


def test_the_main_process_writes_only_for_the_run_it_holds(store):
    """Hand-over and the hard time limit come from a worker's main process, which knows its
    pool process, not the attempt: they are fenced to that run (`run_holder`)."""
    job_id = _queued_job(store)
    store.claim(job_id, "ml@a/100")
    store.claim(job_id, "ml@b/200", takeover_after_s=0)  # taken over: a/100 went silent
    assert not store.hand_over(job_id, "ml@a/100")
    assert not store.finish(job_id, JobState.FAILED, error="hard limit", run="ml@a/100")
    with store.engine.connect() as connection:
        handed_over_at = connection.scalar(select(Job.handed_over_at).where(Job.id == job_id))
    assert handed_over_at is None and store.current_state(job_id) == "running"

    assert store.hand_over(job_id, "ml@b/200")
    assert store.finish(job_id, JobState.FAILED, error="hard limit", run="ml@b/200")
    assert store.current_state(job_id) == "failed"


def test_a_key_at_its_running_limit_has_its_next_job_left_queued(store):
    first, second = insert_job(store.engine, owner="a"), insert_job(store.engine, owner="a")
    other = insert_job(store.engine, owner="b")
    assert store.claim(first, "w1", max_running_per_key=1) is not None
    assert store.claim(second, "w1", max_running_per_key=1) is None
    assert store.current_state(second) == "queued"
    assert store.other_keys_waiting(second)  # b's job: the worker skips to it
    assert store.claim(other, "w1", max_running_per_key=1) is not None
    assert not store.other_keys_waiting(second)
    # A takeover of a's running job is not held back by that job itself.
    assert store.claim(first, "w2", takeover_after_s=0, max_running_per_key=1).attempts == 2
    assert store.finish(first, JobState.SUCCEEDED, attempt=2)
    assert store.claim(second, "w1", max_running_per_key=1) is not None
    # With auth off every job is the anonymous owner's: no limit among one caller's jobs.
    anonymous = [insert_job(store.engine) for _ in range(2)]
    assert all(store.claim(job, "w1", max_running_per_key=1) for job in anonymous)
