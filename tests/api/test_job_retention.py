"""Finished jobs expire: row, events and artifacts go after CONVEYOR_JOB_RETENTION_S."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from conveyor_core.artifact_paths import job_artifact_path
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.settings import Settings
from conveyor_core.states import JobState
from conveyor_core.store import Job, JobEvent, utcnow
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.event_log import record_events, state_event
from sqlalchemy import func, select
from support.maintenance import run_maintenance
from support.rows import insert_job

DAY = 24 * 3600.0


ATTEMPT = 1  # the run whose folder holds the files


def _prune(database_url: str, artifacts: ArtifactStore, retention_s: float) -> int:
    """One retention sweep of the gateway's maintenance, against the real job store."""
    settings = Settings(database_url=database_url, job_retention_s=retention_s)
    return run_maintenance(settings, lambda maintenance: maintenance.prune_jobs(), artifacts)


def _finished_job(engine, artifacts: ArtifactStore, finished_days_ago: float) -> uuid.UUID:
    finished = utcnow() - timedelta(seconds=finished_days_ago * DAY)
    job_id = insert_job(
        engine,
        state=JobState.SUCCEEDED,
        finished_at=finished,
        artifacts=["output.txt"],
        artifacts_attempt=ATTEMPT,
        event_seq=1,
    )
    with artifacts.open(job_artifact_path(job_id, "output.txt", ATTEMPT), "wb") as handle:
        handle.write(b"result")
    with engine.begin() as connection:
        record_events(connection, job_id, 1, [state_event(JobState.SUCCEEDED, 1)])
    return job_id


def _exists(engine, job_id: uuid.UUID) -> tuple[bool, int]:
    with engine.connect() as connection:
        row = connection.scalar(select(Job.id).where(Job.id == job_id))
        events = connection.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)
        )
    return row is not None, events


def test_jobs_finished_before_the_retention_period_go_with_their_events_and_files(
    database_url: str, tmp_path: Path
):
    engine = make_sync_engine(database_url)
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    old = _finished_job(engine, artifacts, finished_days_ago=31)
    recent = _finished_job(engine, artifacts, finished_days_ago=1)
    running = insert_job(engine, state=JobState.RUNNING, started_at=utcnow() - timedelta(days=60))

    assert _prune(database_url, artifacts, retention_s=30 * DAY) == 1

    assert _exists(engine, old) == (False, 0)
    assert not artifacts.exists(job_artifact_path(old, "output.txt", ATTEMPT))
    assert _exists(engine, recent) == (True, 1)
    assert artifacts.exists(job_artifact_path(recent, "output.txt", ATTEMPT))
    assert _exists(engine, running) == (True, 0)  # not finished: never expires
    engine.dispose()


def test_a_retention_of_zero_keeps_every_job(database_url: str, tmp_path: Path):
    engine = make_sync_engine(database_url)
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    ancient = _finished_job(engine, artifacts, finished_days_ago=3650)

    assert _prune(database_url, artifacts, retention_s=0) == 0

    assert _exists(engine, ancient) == (True, 1)
    assert artifacts.exists(job_artifact_path(ancient, "output.txt", ATTEMPT))
    engine.dispose()


class _UnreachableBucket(ArtifactStore):
    """A store whose deletes fail, as a remote bucket does while it cannot be reached."""

    def remove_folder(self, path: str) -> None:
        raise OSError(f"cannot delete {path}: bucket unreachable")


def test_a_job_whose_files_cannot_be_deleted_keeps_its_row_until_they_are(
    database_url: str, tmp_path: Path
):
    engine = make_sync_engine(database_url)
    root = str(tmp_path / "artifacts")
    old = _finished_job(engine, ArtifactStore(root), finished_days_ago=31)
    without_files = insert_job(
        engine, state=JobState.FAILED, finished_at=utcnow() - timedelta(days=31)
    )

    assert _prune(database_url, _UnreachableBucket(root), retention_s=30 * DAY) == 1
    assert _exists(engine, old) == (True, 1)  # kept: its files would have no job
    assert _exists(engine, without_files) == (False, 0)

    assert _prune(database_url, ArtifactStore(root), retention_s=30 * DAY) == 1
    assert _exists(engine, old) == (False, 0)
    assert not ArtifactStore(root).exists(job_artifact_path(old, "output.txt", ATTEMPT))
    engine.dispose()
