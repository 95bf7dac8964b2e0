"""Writing a job's events: numbered rows, stored in the transaction that changes the job.

Whoever changes a job (a worker, the gateway's cancel, the maintenance loop) raises
`jobs.event_seq` by the number of events in the same UPDATE, then stores the events with
the numbers that UPDATE returned. The row lock the UPDATE takes orders one job's events
as their transactions commit, so a reader that saw event n has seen every event before it.
On PostgreSQL the same transaction sends a NOTIFY (delivered at commit) to wake gateways.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnExpressionArgument,
    Connection,
    Executable,
    Row,
    Update,
    func,
    insert,
    select,
    update,
)

from conveyor_core.event_contract import NOTIFY_CHANNEL, EventKind
from conveyor_core.states import JobState
from conveyor_core.store.models import Job, JobEvent, utcnow


@dataclass(frozen=True)
class NewEvent:
    """An event about to be stored; `data` is its JSON without `at` (the row's created_at)."""

    kind: EventKind
    data: dict[str, Any]
    at: datetime


def state_event(state: JobState, attempts: int, error: str | None = None) -> NewEvent:
    # A succeeded event's result is read from the job row when it is sent, not copied here.
    return NewEvent(
        EventKind.STATE, {"state": state.value, "attempts": attempts, "error": error}, utcnow()
    )


def progress_event(progress: float) -> NewEvent:
    return NewEvent(EventKind.PROGRESS, {"progress": progress}, utcnow())


def event_rows(
    job_id: uuid.UUID, last_seq: int, events: Sequence[NewEvent]
) -> list[dict[str, Any]]:
    """Rows for `events`, numbered so that the last one is `last_seq`."""
    first = last_seq - len(events) + 1
    return [
        {
            "job_id": job_id,
            "seq": first + i,
            "kind": e.kind.value,
            "data": e.data,
            "created_at": e.at,
        }
        for i, e in enumerate(events)
    ]


def notify(job_id: uuid.UUID) -> Executable:
    return select(func.pg_notify(NOTIFY_CHANNEL, str(job_id)))


# Built once: the worker stores events on every job, and a statement reused as is keeps
# SQLAlchemy from rebuilding and hashing it each time.
_INSERT_EVENTS = insert(JobEvent)


def insert_events(
    connection: Connection, job_id: uuid.UUID, last_seq: int, events: Sequence[NewEvent]
) -> None:
    """Store `events` in the caller's transaction, without the NOTIFY: for a caller whose
    own statement sends it (the worker's UPDATEs return `pg_notify(...)`)."""
    if events:
        connection.execute(_INSERT_EVENTS, event_rows(job_id, last_seq, events))


def record_events(
    connection: Connection, job_id: uuid.UUID, last_seq: int, events: Sequence[NewEvent]
) -> None:
    """Store `events` in the caller's transaction and wake PostgreSQL listeners at commit."""
    if not events:
        return
    insert_events(connection, job_id, last_seq, events)
    if connection.dialect.name == "postgresql":
        connection.execute(notify(job_id))


@dataclass(frozen=True)
class StateChange:
    """Jobs matching `where`, which guards the state they must be in, move to `state`.

    `values` are the other columns to set; `error` is set on the job and reported in its event
    (None leaves the column as it is); `returning` adds columns to the changed rows. A
    change kept for reuse takes its values as bound parameters (`change_state`'s `params`),
    so that its statement is built once.
    """

    where: Sequence[ColumnExpressionArgument[bool]]
    state: JobState
    values: Mapping[str, Any]
    error: str | None = None
    returning: Sequence[ColumnExpressionArgument[Any]] = ()

    @functools.cached_property
    def statement(self) -> Update:
        """The UPDATE, raising event_seq by the one event each changed job gets."""
        changes = {**self.values, "state": self.state, "event_seq": Job.event_seq + 1}
        if self.error is not None:
            changes["error"] = self.error
        return (
            update(Job)
            .where(*self.where)
            .values(changes)
            .returning(Job.id, Job.attempts, Job.event_seq, *self.returning)
        )

    def event(self, attempts: int) -> NewEvent:
        return state_event(self.state, attempts, self.error)


def change_state(
    connection: Connection, change: StateChange, params: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """Make `change` (with its bound `params`) and store each changed job's event, in the
    caller's transaction; return the changed rows (id, attempts, event_seq, then
    `change.returning`)."""
    changed = connection.execute(change.statement, params).all()
    for job in changed:
        record_events(connection, job.id, job.event_seq, [change.event(job.attempts)])
    return changed
