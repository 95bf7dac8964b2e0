"""The job state changes a worker makes, each one guarded by the state it expects.

Every write names the state it comes from, so a late or duplicate delivery cannot
undo a cancel or run a finished job twice. Each change also stores the job's event for
its live progress stream, in the same transaction (see store/event_log.py).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Engine,
    Row,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import JSONB

from conveyor_core.artifact_paths import job_artifact_path
from conveyor_core.event_contract import NOTIFY_CHANNEL, EventKind, OutputStream
from conveyor_core.states import JobState
from conveyor_core.store.event_log import NewEvent, insert_events, progress_event, state_event
from conveyor_core.store.models import Job, JobEvent, UTCDateTime, utcnow


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
    """A worker's writes. Each is one transaction: the guarded UPDATE, then its events.

    Statements are built once per shape and take their values as bound parameters:
    SQLAlchemy then reuses the compiled SQL without rebuilding and hashing the statement on
    every job, which was most of a tiny job's store time. On PostgreSQL, where each
    statement is a network round trip, an UPDATE that stores events also returns
    `pg_notify(...)` (the event streams' wake-up, delivered at commit), and the two writes
    every job makes (claim, finish) are one statement each, sent in autocommit: the UPDATE,
    its state event and the NOTIFY in one round trip instead of five.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def claim(
        self,
        job_id: uuid.UUID,
        worker: str,
        takeover_after_s: float | None = None,
        max_running_per_key: int = 0,
    ) -> Claim | None:
        """Move a queued job to running and count the attempt.

        With `takeover_after_s` (a redelivered message: its worker was lost mid-job), a job
        left `running` may be taken over too, but only once its heartbeat has been silent that
        long: a live run elsewhere (a duplicate message, a hand-over requeue) is never joined
        by a second one. With `max_running_per_key`, a job whose key already has that many
        jobs of its type running is not claimed: it stays queued.
        """
        now = utcnow()
        values: dict[str, Any] = {"job_id": job_id, "now": now, "worker": worker}
        if takeover_after_s is not None:
            values["silent_since"] = now - timedelta(seconds=takeover_after_s)
        if max_running_per_key:
            values["max_running"] = max_running_per_key
        statement = _claim_statement(takeover_after_s is not None, bool(max_running_per_key))
        row = self._change_state(statement, values, JobState.RUNNING)
        if row is None:
            return None
        return Claim(
            type=row.type,
            params=row.params,
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            created_at=row.created_at,
        )

    def other_keys_waiting(self, job_id: uuid.UUID) -> bool:
        """Whether a job of another key waits in `job_id`'s queue (same type, queued)."""
        with self.engine.connect() as connection:
            return connection.execute(_OTHER_KEYS_WAITING, {"job_id": job_id}).first() is not None

    def current_state(self, job_id: uuid.UUID) -> str | None:
        with self.engine.connect() as connection:
            state: str | None = connection.execute(
                _CURRENT_STATE, {"job_id": job_id}
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
        events = [progress_event(progress)] if progress_changed else []
        statement = _guarded_update(
            frozenset({"heartbeat_at", "updated_at", "progress"}),
            attempt is not None,
            new_events=bool(events),
            notify=self._postgres and bool(events),
            returning=("cancel_requested",),
        )
        values = _guard(job_id, attempt)
        values |= {"heartbeat_at": now, "updated_at": now, "progress": progress}
        if events:
            values["new_events"] = len(events)
        with self.engine.begin() as connection:
            row = connection.execute(statement, values).one_or_none()
            if row is not None:
                insert_events(connection, job_id, row.event_seq, events)
        if row is None:
            return Beat(still_running=False, cancel_requested=True)
        return Beat(still_running=True, cancel_requested=bool(row.cancel_requested))

    def hand_over(self, job_id: uuid.UUID, run: str) -> bool:
        """Note that the job's message is about to be acked while the job still runs.

        Fenced by `run` (see `run_holder`): the worker's main process only knows which pool
        process runs the job, and a run that another worker took over is not its to hand over.
        """
        statement = _guarded_update(frozenset({"handed_over_at"}), with_run=True)
        with self.engine.begin() as connection:
            values = _guard(job_id, None) | {"run": run, "handed_over_at": utcnow()}
            return connection.execute(statement, values).rowcount == 1

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
        run: str | None = None,
    ) -> bool:
        """Write the final state if the job is still running; False if something else won.

        Fenced by `attempt` (the run's own writes) or by `run` (the worker's main process,
        which knows which pool process it killed but not the attempt it ran). A fenced
        finish also records that the attempt's folder holds the job's artifacts.
        """
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
            if attempt is not None:
                values["artifacts_attempt"] = attempt
        if progress is not None:
            values["progress"] = progress
        statement = _guarded_update(
            frozenset(values),
            attempt is not None,
            with_run=run is not None,
            new_events=True,
            returning=("attempts",),
        )
        values |= _guard(job_id, attempt) | {"new_events": 1}
        if run is not None:
            values["run"] = run
        return self._change_state(statement, values, state, error) is not None

    def _change_state(
        self, statement: Update, values: dict[str, Any], state: JobState, error: str | None = None
    ) -> Row[Any] | None:
        """Run a guarded UPDATE moving a job to `state` and store its state event.

        `statement` returns the job's `attempts` and `event_seq`; None if no job matched.
        """
        event = state_event(state, 0, error)  # `attempts` comes from the updated row
        if self._postgres:
            with self._autocommit.connect() as connection:
                return connection.execute(
                    _with_state_event(statement),
                    values | {"event_data": event.data, "event_at": event.at},
                ).one_or_none()
        with self.engine.begin() as connection:
            row = connection.execute(statement, values).one_or_none()
            if row is not None:
                counted = replace(event, data=event.data | {"attempts": row.attempts})
                insert_events(connection, values["job_id"], row.event_seq, [counted])
            return row

    def artifact_location(self, job_id: uuid.UUID, name: str) -> str | None:
        """Where the finished job `job_id` keeps its artifact `name`; None if it has none.

        Only a finished job lists artifacts, and only the folder of the attempt that
        recorded the outcome is ever named: never a running or superseded run's files.
        """
        with self.engine.connect() as connection:
            row = connection.execute(_ARTIFACTS, {"job_id": job_id}).one_or_none()
        if row is None or name not in (row.artifacts or []):
            return None
        return job_artifact_path(job_id, name, row.artifacts_attempt)

    def append_output(
        self, job_id: uuid.UUID, lines: list[OutputLine], attempt: int | None = None
    ) -> bool:
        """Store output lines as events while the job (this attempt) runs; False once not."""
        if not lines:
            return True
        statement = _guarded_update(
            frozenset(), attempt is not None, new_events=True, notify=self._postgres
        )
        events = [
            NewEvent(EventKind.OUTPUT, {"stream": line.stream, "line": line.line}, line.at)
            for line in lines
        ]
        with self.engine.begin() as connection:
            values = _guard(job_id, attempt) | {"new_events": len(events)}
            row = connection.execute(statement, values).one_or_none()
            if row is None:
                return False
            insert_events(connection, job_id, row.event_seq, events)
        return True


# --- statements, built once per shape

JOBS = cast(Table, Job.__table__)
JOB_EVENTS = cast(Table, JobEvent.__table__)
_CURRENT_STATE = select(JOBS.c.state).where(JOBS.c.id == bindparam("job_id"))
_ARTIFACTS = select(JOBS.c.artifacts, JOBS.c.artifacts_attempt).where(
    JOBS.c.id == bindparam("job_id")
)


def _notify_column(notify: bool) -> list[ColumnElement[Any]]:
    if not notify:
        return []
    return [func.pg_notify(NOTIFY_CHANNEL, cast_(JOBS.c.id, String)).label("notified")]


_PEER = JOBS.alias("peer")
_THIS = JOBS.alias("this")
_OTHER_KEYS_WAITING = (
    select(literal(1))
    .select_from(_PEER)
    .join(_THIS, _THIS.c.id == bindparam("job_id"))
    .where(
        _PEER.c.type == _THIS.c.type,
        _PEER.c.state == JobState.QUEUED,
        _PEER.c.owner != _THIS.c.owner,
    )
    .limit(1)
)


@functools.cache
def _claim_statement(takeover: bool, limited: bool = False) -> Update:
    claimable = JOBS.c.state == JobState.QUEUED
    if takeover:
        silent = and_(
            JOBS.c.state == JobState.RUNNING, JOBS.c.heartbeat_at < bindparam("silent_since")
        )
        claimable = or_(claimable, silent)
    if limited:
        # The key's other running jobs of this type (not this one: a takeover is one of
        # them). Checked in the claim, not locked: concurrent claims may pass it together.
        running = (
            select(func.count())
            .select_from(_PEER)
            .where(
                _PEER.c.owner == JOBS.c.owner,
                _PEER.c.type == JOBS.c.type,
                _PEER.c.state == JobState.RUNNING,
                _PEER.c.id != JOBS.c.id,
            )
            .scalar_subquery()
        )
        # With auth off every caller is one owner (""): no keys to share workers among.
        claimable = and_(claimable, or_(JOBS.c.owner == "", running < bindparam("max_running")))
    now: BindParameter[datetime] = bindparam("now")
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), claimable)
        .values(
            state=JobState.RUNNING,
            attempts=JOBS.c.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            updated_at=now,
            worker=bindparam("worker"),
            handed_over_at=None,
            event_seq=JOBS.c.event_seq + 1,
        )
        .returning(
            JOBS.c.type,
            JOBS.c.params,
            JOBS.c.attempts,
            JOBS.c.cancel_requested,
            JOBS.c.created_at,
            JOBS.c.event_seq,
        )
    )


@functools.cache  # keyed by the statement object, itself built once per shape
def _with_state_event(statement: Update) -> Select[Any]:
    """PostgreSQL: `statement`, its state event and the NOTIFY as one statement.

    The event's JSON is built in Python (`event_data`, as for SQLite) and only its
    `attempts` is taken from the updated row.
    """
    updated = statement.returning(JOBS.c.id).cte("updated")
    data = cast_(bindparam("event_data", type_=JSONB), JSONB).op("||")(
        func.jsonb_build_object("attempts", updated.c.attempts)
    )
    event = insert(JOB_EVENTS).from_select(
        ["job_id", "seq", "kind", "data", "created_at"],
        select(
            updated.c.id,
            updated.c.event_seq,
            literal(EventKind.STATE.value),
            data,
            bindparam("event_at", type_=UTCDateTime),
        ),
    )
    notified = func.pg_notify(NOTIFY_CHANNEL, cast_(updated.c.id, String))
    return select(*updated.c, notified).add_cte(event.cte("event"))


@functools.cache
def _guarded_update(
    columns: frozenset[str],
    with_attempt: bool = False,
    *,
    with_run: bool = False,
    new_events: bool = False,
    notify: bool = False,
    returning: tuple[str, ...] = (),
) -> Update:
    """UPDATE `columns` of a running job (of one attempt, or one run holder); `new_events`
    numbers its events."""
    guard = [JOBS.c.id == bindparam("job_id"), JOBS.c.state == JobState.RUNNING]
    if with_attempt:
        guard.append(JOBS.c.attempts == bindparam("attempt"))
    if with_run:
        guard.append(JOBS.c.worker == bindparam("run"))
    values: dict[str, Any] = {name: bindparam(name) for name in sorted(columns)}
    if new_events:
        values["event_seq"] = JOBS.c.event_seq + bindparam("new_events")
    statement = update(JOBS).where(*guard).values(**values)
    if not returning and not new_events:
        return statement  # callers read the rowcount
    return statement.returning(
        *(JOBS.c[name] for name in returning), JOBS.c.event_seq, *_notify_column(notify)
    )


def run_holder(hostname: str, pid: int) -> str:
    """Who runs a job: a worker's pool process. Stored by the claim, so that the worker's
    main process can fence its own writes (hand-over, hard time limit) to that one run."""
    return f"{hostname}/{pid}"


def _guard(job_id: uuid.UUID, attempt: int | None) -> dict[str, Any]:
    return {"job_id": job_id} if attempt is None else {"job_id": job_id, "attempt": attempt}
