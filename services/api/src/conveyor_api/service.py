"""Job operations behind the routes: submit, look up, list, cancel."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from conveyor_core.jobs import AdmissionDenied, JobType
from conveyor_core.jobs.base import ROW_WAIT_S
from conveyor_core.states import JobState
from conveyor_core.store import gateway_ops, utcnow
from conveyor_core.store.gateway_ops import JobRow
from prometheus_client import Counter
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from conveyor_api.batching import BackgroundMarks, Batcher
from conveyor_api.metrics import JOBS_SUBMITTED
from conveyor_api.publisher import JobPublisher
from conveyor_api.unit_of_work import WorkRunner

log = logging.getLogger("conveyor.api")


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class InvalidCursor(ValueError):
    pass


class SourceForbidden(AdmissionDenied):
    """A job names an input file that belongs to another key."""


class QueueQuotaExceeded(Exception):
    """The caller already has as many queued jobs as it may."""


@dataclass(frozen=True)
class Submitted:
    id: uuid.UUID
    type: str
    state: JobState
    created_at: datetime
    replayed: bool


def request_fingerprint(job_type: JobType, params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"type": job_type.name, "params": params}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(job: JobRow) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|")
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidCursor("cursor is not one this API returned") from error


class CancelOutcome(Enum):
    CANCELLED = "cancelled"  # was queued: it will never start
    REQUESTED = "requested"  # is running: its worker stops it
    ALREADY_FINAL = "already_final"
    NOT_FOUND = "not_found"


# What the cancel found the job in (gateway_ops.cancel), and what that means for the caller.
_CANCELLED_FROM = {
    JobState.QUEUED: CancelOutcome.CANCELLED,
    JobState.RUNNING: CancelOutcome.REQUESTED,
}

# How long past the confirm timeout a replay waits for its first request's outcome.
SETTLE_MARGIN_S = 0.5
SETTLE_POLL_S = 0.05


def _refused_row(error: Exception) -> bool:
    """An INSERT error that one row may have caused, not a connection's or the server's.

    The database refused a value (DataError), or a value could not be bound at all (a
    StatementError that never reached the server). Run alone, each row gets its own answer.
    """
    if isinstance(error, DBAPIError):
        return isinstance(error, DataError) and not error.connection_invalidated
    return isinstance(error, StatementError)


@functools.cache
def _submitted(type_name: str) -> Counter:
    return JOBS_SUBMITTED.labels(type_name)  # a label lookup takes a lock: once per type


class JobService:
    """Submissions and lookups, with group commit (see batching.py) on the hot paths.

    Concurrent submissions share one INSERT, and each still waits for the statement
    holding its row to be committed, and for its own publisher confirm (meanwhile, not
    after), before its 202.
    Concurrent lookups share one SELECT. `dispatched_at` is written in the background, in
    batches, mostly inside the next INSERT's transaction: if that write is lost (the
    gateway dies first), the maintenance loop publishes the job again, and the worker's
    claim makes the duplicate message harmless.
    """

    def __init__(
        self,
        runner: WorkRunner,
        publisher: JobPublisher,
        max_queued_per_owner: int = 0,
    ) -> None:
        self.runner = runner
        self.publisher = publisher
        self.max_queued_per_owner = max_queued_per_owner
        self._inserts: Batcher[dict[str, Any], None] = Batcher(
            self._insert_batch, isolate=_refused_row
        )
        self._lookups: Batcher[uuid.UUID, JobRow | None] = Batcher(self._select_batch)
        self._quota_checks: Batcher[str, bool] = Batcher(self._at_quota_batch)
        self.dispatched: BackgroundMarks[uuid.UUID] = BackgroundMarks(self._mark_dispatched)

    async def submit(
        self,
        job_type: JobType,
        params: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        origin: str = "v1",
        owner: str = "",
    ) -> Submitted:
        """Commit the job row and publish its message; a failed publish removes the row.

        So a 202 means both the row and a confirmed persistent message exist, and a 503
        leaves nothing behind that claims to be queued.
        """
        # Only a replay compares fingerprints: a job without a key stores none.
        fingerprint = None if idempotency_key is None else request_fingerprint(job_type, params)
        if idempotency_key is not None:
            previous = await self._settled_by_key(owner, idempotency_key)
            if previous is not None:
                return self._replay(previous, fingerprint)
        await self._check_queue_quota(owner)
        now = utcnow()
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "type": job_type.name,
            "state": JobState.QUEUED,
            "params": params,
            "progress": 0.0,
            "attempts": 0,
            "cancel_requested": False,
            "artifacts": [],
            "owner": owner,
            "origin": origin,
            "idempotency_key": idempotency_key,
            "request_hash": fingerprint,
            "created_at": now,
            "updated_at": now,
        }
        job_id: uuid.UUID = row["id"]
        if idempotency_key is None:
            await self._insert_and_publish(job_type, row)
        else:
            # Alone in its transaction: a unique-key violation must fail only this request.
            try:
                await self.runner.write(gateway_ops.insert_jobs([row]), retry_on_disconnect=False)
            except IntegrityError:
                # Another request with the same key won the race; answer with its job.
                previous = await self._settled_by_key(owner, idempotency_key)
                if previous is None:
                    raise
                return self._replay(previous, fingerprint)
            try:
                await self.publisher.publish(job_type, job_id)
            except BaseException as error:
                await self._withdraw(job_id, error)
            self.dispatched.add(job_id)
        _submitted(job_type.name).inc()
        return Submitted(
            id=job_id, type=job_type.name, state=JobState.QUEUED, created_at=now, replayed=False
        )

    async def _insert_and_publish(self, job_type: JobType, row: dict[str, Any]) -> None:
        """Commit the row and publish its message at once: both wait on a disk (the
        store's commit, the quorum queue's confirm), and a submission waits for the longer
        of the two instead of their sum.

        The message can reach a worker before the row is committed; the worker waits for
        it (ROW_WAIT_S). A row that took longer than half that is left undispatched for the
        maintenance loop to publish again, in case its first message was dropped.
        """
        job_id: uuid.UUID = row["id"]
        started = time.monotonic()
        inserted = asyncio.ensure_future(self._inserts.run(row))
        try:
            await self.publisher.publish(job_type, job_id)
        except BaseException as error:
            try:
                await inserted  # a row is withdrawn once it is written, not before
            except Exception:
                raise error from None  # neither row nor message: nothing to undo
            await self._withdraw(job_id, error)
        # A failed insert raises here: its message, if any, is dropped by the worker.
        await inserted
        if time.monotonic() - started < ROW_WAIT_S / 2:
            self.dispatched.add(job_id)

    async def _withdraw(self, job_id: uuid.UUID, error: BaseException) -> None:
        """Take back a job whose publish failed, unless a worker already claimed it."""
        withdrawn = await self.runner.write(gateway_ops.withdraw(job_id))
        if withdrawn or not isinstance(error, Exception):
            raise error
        # A worker claimed the job already, so RabbitMQ had taken the message and only
        # its confirm came late (a busy loop, a GC pause). The job stands: a 503 would
        # have its caller submit it again, and it would run twice.
        log.warning("job %s was claimed before its publish confirm arrived: kept", job_id)

    async def check_inputs(self, job_type: JobType, params: Any, owner: str, admin: bool) -> None:
        """A key may read its own uploads and its own jobs' artifacts, nothing else."""
        if admin:
            return
        for name, path in job_type.input_paths(params).items():
            if not await self._may_read(path, owner):
                raise SourceForbidden(
                    f"{name} {path!r} is not yours: use uploads/{owner or 'local'}/<name> "
                    "(PUT /v1/files/<name>) or jobs/<id of your job>/<artifact>"
                )

    async def _may_read(self, path: str, owner: str) -> bool:
        parts = path.split("/")
        if parts[:2] == ["uploads", owner or "local"]:
            return True
        if parts[0] == "jobs" and len(parts) > 2:
            try:
                job_id = uuid.UUID(parts[1])
            except ValueError:
                return False
            return await self.get(job_id, owner) is not None
        return False

    # --- batches: one statement for every request that queued meanwhile

    async def _insert_batch(self, rows: list[dict[str, Any]]) -> list[None]:
        dispatched = self.dispatched.take()
        written = False
        try:
            await self.runner.write(gateway_ops.insert_jobs(rows, dispatched))
            written = True
        except IntegrityError:
            # Only the ids can clash (fresh uuid4s; no idempotency key in a batch): the
            # batch was retried after a lost connection, and its first COMMIT had gone through.
            if (await self._select_batch([rows[0]["id"]]))[0] is None:
                raise
        finally:
            self.dispatched.taken(dispatched, written=written)
        return [None] * len(rows)

    async def _select_batch(self, job_ids: list[uuid.UUID]) -> list[JobRow | None]:
        rows = await self.runner.read(gateway_ops.jobs_by_id(list(set(job_ids))))
        by_id = {row.id: row for row in rows}
        return [by_id.get(job_id) for job_id in job_ids]

    async def _mark_dispatched(self, job_ids: list[uuid.UUID]) -> None:
        await self.runner.write(gateway_ops.mark_dispatched(job_ids))

    async def _check_queue_quota(self, owner: str) -> None:
        if self.max_queued_per_owner and await self._quota_checks.run(owner):
            raise QueueQuotaExceeded(
                f"{self.max_queued_per_owner} jobs of this key are already queued; "
                "wait for some to start"
            )

    async def _at_quota_batch(self, owners: list[str]) -> list[bool]:
        """Which owners have their quota of queued jobs: one check per distinct owner.

        Like the check of a single submission, it is not atomic with the INSERT: a key
        can exceed its quota by the submissions it has in flight at once.
        """
        at_quota = await self.runner.read(
            gateway_ops.owners_at_quota(set(owners), self.max_queued_per_owner)
        )
        return [owner in at_quota for owner in owners]

    @staticmethod
    def _replay(previous: JobRow, fingerprint: str | None) -> Submitted:
        if previous.request_hash != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different request"
            )
        return Submitted(
            id=previous.id,
            type=previous.type,
            state=JobState(previous.state),
            created_at=previous.created_at,
            replayed=True,
        )

    async def _settled_by_key(self, owner: str, key: str) -> JobRow | None:
        """The job an earlier request with this key queued, once that request's outcome is
        known: None if its publish failed and it withdrew the row.

        A replay that answered from the row at once could give a 202 for a job its first
        request is about to withdraw, and then a 404. So while the row may still be
        waiting for its confirm (queued, unclaimed, not marked dispatched, younger than
        the confirm timeout), the replay waits for that, polling.
        """
        deadline = time.monotonic() + self.publisher.confirm_timeout_s + SETTLE_MARGIN_S
        while True:
            previous = await self._find_by_key(owner, key)
            if previous is None or not self._awaiting_confirm(previous):
                return previous
            if time.monotonic() >= deadline:
                return previous  # its request ended, whatever the row says: the job stands
            await asyncio.sleep(SETTLE_POLL_S)

    def _awaiting_confirm(self, job: JobRow) -> bool:
        window = timedelta(seconds=self.publisher.confirm_timeout_s + SETTLE_MARGIN_S)
        return (
            job.state == JobState.QUEUED
            and job.attempts == 0
            and job.dispatched_at is None
            and job.id not in self.dispatched.pending
            and utcnow() - job.created_at < window
        )

    async def _find_by_key(self, owner: str, key: str) -> JobRow | None:
        return await self.runner.read(gateway_ops.job_by_key(owner, key))

    async def get(self, job_id: uuid.UUID, owner: str | None = None) -> JobRow | None:
        job = await self._lookups.run(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    async def list(
        self,
        *,
        type_name: str | None,
        state: JobState | None,
        limit: int,
        cursor: str | None,
        owner: str | None = None,
    ) -> tuple[list[JobRow], str | None]:
        """Newest first, keyset-paginated on (created_at, id): stable under inserts."""
        after = None if cursor is None else decode_cursor(cursor)
        jobs = await self.runner.read(
            gateway_ops.list_jobs(
                type_name=type_name, state=state, owner=owner, after=after, limit=limit + 1
            )
        )
        if len(jobs) > limit:
            return jobs[:limit], encode_cursor(jobs[limit - 1])
        return jobs, None

    async def cancel(
        self, job_id: uuid.UUID, owner: str | None = None
    ) -> tuple[CancelOutcome, JobRow | None]:
        job = await self.get(job_id, owner)
        if job is None:
            return CancelOutcome.NOT_FOUND, None
        # Not retried after a lost connection: a cut-off COMMIT that went through would then
        # read as "already final".
        found = await self.runner.write(
            gateway_ops.cancel(job_id, utcnow()), retry_on_disconnect=False
        )
        outcome = CancelOutcome.ALREADY_FINAL if found is None else _CANCELLED_FROM[found]
        return outcome, await self.get(job_id, owner)
