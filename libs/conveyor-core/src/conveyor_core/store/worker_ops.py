"""The job state changes a worker makes, each one guarded by the state it expects.

Every write names the state it comes from, so a late or duplicate delivery cannot
undo a cancel or run a finished job twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_, select, update

from conveyor_core.states import JobState
from conveyor_core.store.models import Job, utcnow


@dataclass(frozen=True)
class Claim:
    type: str
    params: Any
    attempts: int
    cancel_requested: bool
    created_at: datetime


@dataclass(frozen=True)
class Beat:
    still_running: bool
    cancel_requested: bool


class WorkerJobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(
        self, job_id: uuid.UUID, worker: str, takeover_after_s: float | None = None
    ) -> Claim | None:
        """Move a queued job to running and count the attempt.

        With `takeover_after_s` (a redelivered message: its worker was lost mid-job), a job
        left `running` may be taken over too, but only once its heartbeat has been silent that
        long: a live run elsewhere (a duplicate message, a hand-over requeue) is never joined
        by a second one.
        """
        now = utcnow()
        claimable = Job.state == JobState.QUEUED
        if takeover_after_s is not None:
            silent_since = now - timedelta(seconds=takeover_after_s)
            claimable = or_(
                claimable, and_(Job.state == JobState.RUNNING, Job.heartbeat_at < silent_since)
            )
        statement = (
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
                worker=worker,
                handed_over_at=None,
            )
            .returning(Job.type, Job.params, Job.attempts, Job.cancel_requested, Job.created_at)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
        if row is None:
            return None
        return Claim(
            type=row.type,
            params=row.params,
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            created_at=row.created_at,
        )

    def current_state(self, job_id: uuid.UUID) -> str | None:
        with self.engine.connect() as connection:
            state: str | None = connection.execute(
                select(Job.state).where(Job.id == job_id)
            ).scalar_one_or_none()
        return state

    def beat(self, job_id: uuid.UUID, progress: float, attempt: int | None = None) -> Beat:
        """Record liveness and progress; tell the runner whether a cancel was asked for.

        With `attempt`, only that attempt's run counts as alive: a run the reaper gave up on
        (its job queued again and claimed by another worker) learns that it must stop.
        """
        now = utcnow()
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, *_of_attempt(attempt))
            .values(heartbeat_at=now, updated_at=now, progress=progress)
            .returning(Job.cancel_requested)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
        if row is None:
            return Beat(still_running=False, cancel_requested=True)
        return Beat(still_running=True, cancel_requested=bool(row.cancel_requested))

    def hand_over(self, job_id: uuid.UUID) -> bool:
        """Note that the job's message is about to be acked while the job still runs."""
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING)
            .values(handed_over_at=utcnow())
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def finish(
        self,
        job_id: uuid.UUID,
        state: JobState,
        *,
        result: Any = None,
        error: str | None = None,
        artifacts: list[str] | None = None,
        progress: float | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Write the final state if the job is still running; False if something else won."""
        now = utcnow()
        values: dict[str, Any] = {
            "state": state,
            "result": result,
            "error": error,
            "finished_at": now,
            "updated_at": now,
        }
        if artifacts is not None:
            values["artifacts"] = artifacts
        if progress is not None:
            values["progress"] = progress
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, *_of_attempt(attempt))
            .values(**values)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1


def _of_attempt(attempt: int | None) -> list[ColumnElement[bool]]:
    return [] if attempt is None else [Job.attempts == attempt]
