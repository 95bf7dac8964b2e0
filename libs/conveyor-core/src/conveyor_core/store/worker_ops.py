"""The job state changes a worker makes, each one guarded by the state it expects.

Every write names the state it comes from, so a late or duplicate delivery cannot
undo a cancel or run a finished job twice. Each change also stores the job's event for
its live progress stream, in the same transaction (see store/events.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_, select, update

from conveyor_core.events import EventKind, OutputStream
from conveyor_core.states import JobState
from conveyor_core.store.events import NewEvent, progress_event, record_events, state_event
from conveyor_core.store.models import Job, utcnow


@dataclass(frozen=True)
class Claim:
    type: str
    params: Any
    attempts: int
    cancel_requested: bool
    created_at: datetime


@dataclass(frozen=True)
class OutputLine:
    stream: OutputStream
    line: str
    at: datetime


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
                event_seq=Job.event_seq + 1,
            )
            .returning(
                Job.type,
                Job.params,
                Job.attempts,
                Job.cancel_requested,
                Job.created_at,
                Job.event_seq,
            )
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
            if row is None:
                return None
            running = state_event(JobState.RUNNING, row.attempts)
            record_events(connection, job_id, row.event_seq, [running])
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

    def beat(
        self,
        job_id: uuid.UUID,
        progress: float,
        attempt: int | None = None,
        *,
        progress_changed: bool = False,
    ) -> Beat:
        """Record liveness and progress; tell the runner whether a cancel was asked for.

        With `attempt`, only that attempt's run counts as alive: a run the reaper gave up on
        (its job queued again and claimed by another worker) learns that it must stop.
        `progress_changed` also stores a progress event for the job's live stream.
        """
        now = utcnow()
        values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now, "progress": progress}
        events = [progress_event(progress)] if progress_changed else []
        if events:
            values["event_seq"] = Job.event_seq + 1
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, *_of_attempt(attempt))
            .values(**values)
            .returning(Job.cancel_requested, Job.event_seq)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
            if row is not None:
                record_events(connection, job_id, row.event_seq, events)
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
            "event_seq": Job.event_seq + 1,
        }
        if artifacts is not None:
            values["artifacts"] = artifacts
        if progress is not None:
            values["progress"] = progress
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, *_of_attempt(attempt))
            .values(**values)
            .returning(Job.attempts, Job.event_seq)
        )
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
            if row is None:
                return False
            record_events(
                connection, job_id, row.event_seq, [state_event(state, row.attempts, error)]
            )
        return True

    def append_output(
        self, job_id: uuid.UUID, lines: list[OutputLine], attempt: int | None = None
    ) -> bool:
        """Store output lines as events while the job (this attempt) runs; False once not."""
        if not lines:
            return True
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, *_of_attempt(attempt))
            .values(event_seq=Job.event_seq + len(lines))
            .returning(Job.event_seq)
        )
        events = [
            NewEvent(EventKind.OUTPUT, {"stream": line.stream, "line": line.line}, line.at)
            for line in lines
        ]
        with self.engine.begin() as connection:
            row = connection.execute(statement).one_or_none()
            if row is None:
                return False
            record_events(connection, job_id, row.event_seq, events)
        return True


def _of_attempt(attempt: int | None) -> list[ColumnElement[bool]]:
    return [] if attempt is None else [Job.attempts == attempt]
