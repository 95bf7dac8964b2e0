"""The job state changes a worker makes, each one guarded by the state it expects.

Every write names the state it comes from, so a late or duplicate delivery cannot
undo a cancel or run a finished job twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

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

    def claim(self, job_id: uuid.UUID, worker: str, redelivered: bool = False) -> Claim | None:
        """Move a queued job to running and count the attempt.

        A redelivered message (its worker was lost mid-job) may also take over a job left
        `running`; a duplicate first delivery (a republished message) may not, so one job
        never runs twice at once.
        """
        now = utcnow()
        claimable = [JobState.QUEUED, JobState.RUNNING] if redelivered else [JobState.QUEUED]
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state.in_(claimable))
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                updated_at=now,
                worker=worker,
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

    def beat(self, job_id: uuid.UUID, progress: float) -> Beat:
        """Record liveness and progress; tell the runner whether a cancel was asked for."""
        now = utcnow()
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING)
            .values(heartbeat_at=now, updated_at=now, progress=progress)
            .returning(Job.cancel_requested)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
        if row is None:
            return Beat(still_running=False, cancel_requested=True)
        return Beat(still_running=True, cancel_requested=bool(row.cancel_requested))

    def finish(
        self,
        job_id: uuid.UUID,
        state: JobState,
        *,
        result: Any = None,
        error: str | None = None,
        artifacts: list[str] | None = None,
        progress: float | None = None,
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
            update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING).values(**values)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1
