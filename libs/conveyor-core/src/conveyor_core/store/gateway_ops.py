"""The gateway's statements: every read and write it makes to the job store.

Each operation is a unit of work, a function of a SQLAlchemy `Connection`; the gateway's
runner (conveyor_api/unit_of_work.py) decides whether it runs in a transaction, and where.
A state change stores its event in the same unit (store/event_log.py), as the worker's
writes do (store/worker_ops.py).

As in worker_ops.py, statements are built once per shape and take their values as bound
parameters: SQLAlchemy then reuses the compiled SQL without rebuilding and hashing the
statement on every request.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Executable,
    Integer,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)

from conveyor_core.states import FINAL_STATES, JobState
from conveyor_core.store.event_log import StateChange, change_state
from conveyor_core.store.models import ApiKey, Job, JobEvent, utcnow

T = TypeVar("T")
Work = Callable[[Connection], T]  # a unit of work
JobRow = Row[Any]  # a `jobs` row: attribute access by column name, like the ORM object
EventRow = Row[Any]  # a `job_events` row

_LIMIT = bindparam("limit", type_=Integer)
JOBS = cast(Table, Job.__table__)
JOB_EVENTS = cast(Table, JobEvent.__table__)
API_KEYS = cast(Table, ApiKey.__table__)


def _rows(statement: Executable, params: dict[str, Any]) -> Work[list[Row[Any]]]:
    def work(connection: Connection) -> list[Row[Any]]:
        return list(connection.execute(statement, params).all())

    return work


def _first(statement: Executable, params: dict[str, Any]) -> Work[Row[Any] | None]:
    def work(connection: Connection) -> Row[Any] | None:
        return connection.execute(statement, params).first()

    return work


def _rowcount(statement: Executable, params: dict[str, Any]) -> Work[int]:
    def work(connection: Connection) -> int:
        return connection.execute(statement, params).rowcount

    return work


# --- submissions and lookups (conveyor_api/service.py)

_INSERT_JOBS = insert(JOBS)
_JOBS_BY_ID = select(JOBS).where(JOBS.c.id.in_(bindparam("ids", expanding=True)))
_MARK_DISPATCHED = (
    update(JOBS)
    .where(JOBS.c.id.in_(bindparam("ids", expanding=True)))
    .values(dispatched_at=bindparam("now"))
)
# Is there a limit-th queued job of this owner? Reads at most `limit` index entries,
# never counts them all.
_NTH_QUEUED = (
    select(JOBS.c.id)
    .where(JOBS.c.owner == bindparam("owner"), JOBS.c.state == JobState.QUEUED)
    .offset(bindparam("skip"))
    .limit(1)
)
# A job whose publish failed is withdrawn only while no worker has claimed it.
_WITHDRAW = delete(JOBS).where(
    JOBS.c.id == bindparam("job_id"), JOBS.c.state == JobState.QUEUED, JOBS.c.attempts == 0
)
_JOB_BY_KEY = select(JOBS).where(
    JOBS.c.owner == bindparam("owner"), JOBS.c.idempotency_key == bindparam("key")
)


def insert_jobs(
    rows: list[dict[str, Any]], dispatched: list[uuid.UUID] | None = None
) -> Work[None]:
    """Insert `rows`; mark `dispatched` (earlier jobs' confirms) in the same commit."""

    def work(connection: Connection) -> None:
        connection.execute(_INSERT_JOBS, rows)  # executemany: compiled once, one transaction
        if dispatched:  # carried along: one commit for both
            connection.execute(_MARK_DISPATCHED, {"ids": dispatched, "now": utcnow()})

    return work


def jobs_by_id(job_ids: list[uuid.UUID]) -> Work[list[JobRow]]:
    return _rows(_JOBS_BY_ID, {"ids": job_ids})


def mark_dispatched(job_ids: list[uuid.UUID]) -> Work[int]:
    """Record that RabbitMQ confirmed these jobs' messages."""
    return _rowcount(_MARK_DISPATCHED, {"ids": job_ids, "now": utcnow()})


def withdraw(job_id: uuid.UUID) -> Work[int]:
    """Delete a queued job no worker claimed yet: 1 if it was, 0 if it was claimed."""
    return _rowcount(_WITHDRAW, {"job_id": job_id})


def job_by_key(owner: str, key: str) -> Work[JobRow | None]:
    return _first(_JOB_BY_KEY, {"owner": owner, "key": key})


def owners_at_quota(owners: set[str], limit: int) -> Work[set[str]]:
    """Which of `owners` have `limit` queued jobs or more."""

    def work(connection: Connection) -> set[str]:
        return {
            owner
            for owner in owners
            if connection.execute(_NTH_QUEUED, {"owner": owner, "skip": limit - 1}).first()
        }

    return work


@functools.cache
def _list_statement(by_type: bool, by_state: bool, by_owner: bool, after: bool) -> Select[Any]:
    query = select(JOBS).order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc()).limit(_LIMIT)
    if by_type:
        query = query.where(JOBS.c.type == bindparam("type"))
    if by_state:
        query = query.where(JOBS.c.state == bindparam("state"))
    if by_owner:
        query = query.where(JOBS.c.owner == bindparam("owner"))
    if after:
        query = query.where(
            or_(
                JOBS.c.created_at < bindparam("after_created"),
                and_(
                    JOBS.c.created_at == bindparam("after_created"),
                    JOBS.c.id < bindparam("after_id"),
                ),
            )
        )
    return query


def list_jobs(
    *,
    type_name: str | None,
    state: JobState | None,
    owner: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Work[list[JobRow]]:
    """Up to `limit` jobs newest first, on (created_at, id): those after `after` if given."""
    statement = _list_statement(
        type_name is not None, state is not None, owner is not None, after is not None
    )
    params: dict[str, Any] = {"limit": limit}
    if type_name is not None:
        params["type"] = type_name
    if state is not None:
        params["state"] = state
    if owner is not None:
        params["owner"] = owner
    if after is not None:
        params["after_created"], params["after_id"] = after
    return _rows(statement, params)


_CANCEL_QUEUED = StateChange(
    where=[JOBS.c.id == bindparam("job_id"), JOBS.c.state == JobState.QUEUED],
    state=JobState.CANCELLED,
    values={
        "cancel_requested": True,
        "finished_at": bindparam("now"),
        "updated_at": bindparam("now"),
    },
    error="cancelled by request",
)
_REQUEST_CANCEL = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.state == JobState.RUNNING)
    .values(cancel_requested=True, updated_at=bindparam("now"))
)


def cancel(job_id: uuid.UUID, now: datetime) -> Work[JobState | None]:
    """Cancel a queued job, or ask a running job's worker to stop it.

    Returns the state the job was found in: QUEUED (now cancelled, its event stream ends
    here), RUNNING (its worker stops it and writes the final state), or None (neither:
    already final, or gone).
    """
    params = {"job_id": job_id, "now": now}

    def work(connection: Connection) -> JobState | None:
        if change_state(connection, _CANCEL_QUEUED, params):
            return JobState.QUEUED
        if connection.execute(_REQUEST_CANCEL, params).rowcount:
            return JobState.RUNNING
        return None

    return work


# --- repairs and retention (conveyor_api/maintenance.py)

_UNDISPATCHED = (
    select(JOBS.c.id, JOBS.c.type)
    .where(
        JOBS.c.state == JobState.QUEUED,
        JOBS.c.dispatched_at.is_(None),
        JOBS.c.created_at < bindparam("cutoff"),
    )
    .limit(_LIMIT)
)
# A running job whose heartbeat stopped before `silent_since`...
_SILENT = and_(JOBS.c.state == JobState.RUNNING, JOBS.c.heartbeat_at < bindparam("silent_since"))
# ...and whose message was acked at its hand-over, with attempts left.
_REQUEUEABLE = and_(JOBS.c.handed_over_at.is_not(None), JOBS.c.attempts < bindparam("max_attempts"))
_REQUEUE_SILENT = StateChange(
    where=[_SILENT, _REQUEUEABLE],
    state=JobState.QUEUED,
    values={
        "dispatched_at": None,
        "handed_over_at": None,
        "worker": None,
        "updated_at": bindparam("now"),
    },
    returning=[JOBS.c.type],
)
# An event older than the cutoff whose job also finished before it: the index on
# created_at keeps this from reading the events of recent jobs.
_PRUNE_EVENTS = delete(JOB_EVENTS).where(
    JOB_EVENTS.c.id.in_(
        select(JOB_EVENTS.c.id)
        .join(JOBS, JOBS.c.id == JOB_EVENTS.c.job_id)
        .where(
            JOB_EVENTS.c.created_at < bindparam("cutoff"), JOBS.c.finished_at < bindparam("cutoff")
        )
        .limit(_LIMIT)
    )
)
_FINISHED_BEFORE = (
    select(JOBS.c.id, JOBS.c.artifacts)
    .where(JOBS.c.finished_at < bindparam("cutoff"))
    .limit(_LIMIT)
)
_DELETE_FINISHED = delete(JOBS).where(
    JOBS.c.id.in_(bindparam("ids", expanding=True)), JOBS.c.finished_at < bindparam("cutoff")
)


@functools.cache
def _fail_silent(error: str) -> StateChange:
    return StateChange(
        where=[_SILENT, not_(_REQUEUEABLE)],
        state=JobState.FAILED,
        values={"finished_at": bindparam("now"), "updated_at": bindparam("now")},
        error=error,
    )


def undispatched(created_before: datetime, limit: int) -> Work[list[Row[Any]]]:
    """(id, type) of queued jobs created before `created_before` with no confirmed message."""
    return _rows(_UNDISPATCHED, {"cutoff": created_before, "limit": limit})


def requeue_silent(
    silent_since: datetime, max_attempts: int, now: datetime
) -> Work[list[Row[Any]]]:
    """Queue again the silent handed-over jobs with attempts left; their (id, ..., type)."""
    params = {"silent_since": silent_since, "max_attempts": max_attempts, "now": now}

    def work(connection: Connection) -> list[Row[Any]]:
        return list(change_state(connection, _REQUEUE_SILENT, params))

    return work


def fail_silent(silent_since: datetime, max_attempts: int, now: datetime, error: str) -> Work[int]:
    """Fail the silent jobs that requeue_silent does not take; how many."""
    params = {"silent_since": silent_since, "max_attempts": max_attempts, "now": now}
    change = _fail_silent(error)

    def work(connection: Connection) -> int:
        return len(change_state(connection, change, params))

    return work


def prune_events(finished_before: datetime, batch: int) -> Work[int]:
    """Delete up to `batch` events of jobs finished before `finished_before`."""
    return _rowcount(_PRUNE_EVENTS, {"cutoff": finished_before, "limit": batch})


def finished_before(cutoff: datetime, limit: int) -> Work[list[Row[Any]]]:
    """(id, artifacts) of jobs finished before `cutoff`."""
    return _rows(_FINISHED_BEFORE, {"cutoff": cutoff, "limit": limit})


def delete_finished(job_ids: list[uuid.UUID], cutoff: datetime) -> Work[int]:
    """Delete those of `job_ids` that finished before `cutoff` (their events cascade)."""
    return _rowcount(_DELETE_FINISHED, {"ids": job_ids, "cutoff": cutoff})


# --- event streams (conveyor_api/event_stream.py, event_hub.py)

_JOB = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
_RESULT = select(JOBS.c.result).where(JOBS.c.id == bindparam("job_id"))
_EVENTS_AFTER = (
    select(JOB_EVENTS)
    .where(JOB_EVENTS.c.job_id == bindparam("job_id"), JOB_EVENTS.c.seq > bindparam("seq"))
    .order_by(JOB_EVENTS.c.seq)
    .limit(_LIMIT)
)
_EVENT = select(JOB_EVENTS).where(
    JOB_EVENTS.c.job_id == bindparam("job_id"), JOB_EVENTS.c.seq == bindparam("seq")
)
_LAST_EVENT_ID = select(func.max(JOB_EVENTS.c.id))
_JOBS_WITH_EVENTS_AFTER = (
    select(JOB_EVENTS.c.job_id, func.max(JOB_EVENTS.c.id).label("last_id"))
    .where(JOB_EVENTS.c.id > bindparam("cursor"))
    .group_by(JOB_EVENTS.c.job_id)
)
_FINAL_AMONG = select(JOBS.c.id).where(
    JOBS.c.id.in_(bindparam("ids", expanding=True)),
    JOBS.c.state.in_([state.value for state in FINAL_STATES]),
)


def job(job_id: uuid.UUID) -> Work[JobRow | None]:
    return _first(_JOB, {"job_id": job_id})


def job_result(job_id: uuid.UUID) -> Work[Any]:
    def work(connection: Connection) -> Any:
        return connection.execute(_RESULT, {"job_id": job_id}).scalar()

    return work


def events_after(job_id: uuid.UUID, seq: int, limit: int) -> Work[list[EventRow]]:
    """The job's events numbered after `seq`, in order, at most `limit`."""
    return _rows(_EVENTS_AFTER, {"job_id": job_id, "seq": seq, "limit": limit})


def event(job_id: uuid.UUID, seq: int) -> Work[EventRow | None]:
    return _first(_EVENT, {"job_id": job_id, "seq": seq})


def last_event_id(connection: Connection) -> int:
    """The store-wide highest `job_events.id` (0 with no events)."""
    return connection.execute(_LAST_EVENT_ID).scalar() or 0


def jobs_with_events_after(cursor: int) -> Work[list[Row[Any]]]:
    """(job_id, last_id: its highest event id) of each job with events past `cursor`."""
    return _rows(_JOBS_WITH_EVENTS_AFTER, {"cursor": cursor})


def final_among(job_ids: Iterable[uuid.UUID]) -> Work[list[uuid.UUID]]:
    """Those of `job_ids` whose job is in a final state."""
    params = {"ids": list(job_ids)}

    def work(connection: Connection) -> list[uuid.UUID]:
        return list(connection.execute(_FINAL_AMONG, params).scalars())

    return work


# --- API keys (conveyor_api/auth.py) and readiness (routes/health.py)

_ACTIVE_KEY = select(API_KEYS.c.id, API_KEYS.c.name, API_KEYS.c.admin).where(
    API_KEYS.c.key_hash == bindparam("key_hash"), API_KEYS.c.revoked_at.is_(None)
)
_PING = text("SELECT 1")


def active_key(key_hash: str) -> Work[Row[Any] | None]:
    """(id, name, admin) of the unrevoked key with this hash, or None."""
    return _first(_ACTIVE_KEY, {"key_hash": key_hash})


def ping(connection: Connection) -> None:
    """One trivial statement: the store answers."""
    connection.execute(_PING)
