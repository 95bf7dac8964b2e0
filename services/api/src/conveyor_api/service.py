"""Job operations behind the routes: submit, look up, list, cancel."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from conveyor_core.jobs import AdmissionDenied, JobType
from conveyor_core.states import JobState
from conveyor_core.store import Job, utcnow
from conveyor_core.store.events import record_events_async, state_event
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conveyor_api.metrics import JOBS_SUBMITTED
from conveyor_api.publisher import JobPublisher


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
    job: Job
    replayed: bool


def request_fingerprint(job_type: JobType, params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"type": job_type.name, "params": params}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(job: Job) -> str:
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


class JobService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: JobPublisher,
        max_queued_per_owner: int = 0,
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.max_queued_per_owner = max_queued_per_owner

    async def submit(
        self,
        job_type: JobType,
        params: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        origin: str = "v1",
        owner: str = "",
    ) -> Submitted:
        """Commit the job row, then publish; a failed publish removes the row again.

        So a 202 means both the row and a confirmed persistent message exist, and a 503
        leaves nothing behind that claims to be queued.
        """
        fingerprint = request_fingerprint(job_type, params)
        if idempotency_key is not None:
            previous = await self._find_by_key(owner, idempotency_key)
            if previous is not None:
                return self._replay(previous, fingerprint)
        await self._check_queue_quota(owner)
        job = Job(
            id=uuid.uuid4(),
            type=job_type.name,
            state=JobState.QUEUED,
            params=params,
            progress=0.0,
            attempts=0,
            cancel_requested=False,
            artifacts=[],
            owner=owner,
            origin=origin,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            created_at=utcnow(),
        )
        job.updated_at = job.created_at
        try:
            async with self.sessions.begin() as session:
                session.add(job)
        except IntegrityError:
            # Another request with the same key won the race; answer with its job.
            assert idempotency_key is not None
            previous = await self._find_by_key(owner, idempotency_key)
            if previous is None:
                raise
            return self._replay(previous, fingerprint)
        try:
            await self.publisher.publish(job_type, job.id)
        except BaseException:
            async with self.sessions.begin() as session:
                await session.execute(delete(Job).where(Job.id == job.id))
            raise
        await self._mark_dispatched(job.id)
        JOBS_SUBMITTED.labels(job_type.name).inc()
        return Submitted(job=job, replayed=False)

    async def check_source(self, params: Any, owner: str, admin: bool) -> None:
        """A key may read its own uploads and its own jobs' artifacts, nothing else."""
        source: str | None = getattr(params, "source", None)
        if source is None or admin:
            return
        parts = source.split("/")
        if parts[:2] == ["uploads", owner or "local"]:
            return
        if parts[0] == "jobs" and len(parts) > 2:
            try:
                job_id = uuid.UUID(parts[1])
            except ValueError:
                job_id = None
            if job_id is not None and await self.get(job_id, owner) is not None:
                return
        raise SourceForbidden(
            f"source {source!r} is not yours: use uploads/{owner or 'local'}/<name> "
            "(PUT /v1/files/<name>) or jobs/<id of your job>/<artifact>"
        )

    async def _mark_dispatched(self, job_id: uuid.UUID) -> None:
        # If this write is lost (the gateway dies now), the reconciler publishes the job
        # again; the worker's claim makes the duplicate message harmless.
        async with self.sessions.begin() as session:
            await session.execute(
                update(Job).where(Job.id == job_id).values(dispatched_at=utcnow())
            )

    async def _check_queue_quota(self, owner: str) -> None:
        limit = self.max_queued_per_owner
        if not limit:
            return
        # Is there a limit-th queued job? Reads at most `limit` index entries, never counts all.
        nth_queued = (
            select(Job.id)
            .where(Job.owner == owner, Job.state == JobState.QUEUED)
            .offset(limit - 1)
            .limit(1)
        )
        async with self.sessions() as session:
            if await session.scalar(nth_queued) is not None:
                raise QueueQuotaExceeded(
                    f"{limit} jobs of this key are already queued; wait for some to start"
                )

    @staticmethod
    def _replay(previous: Job, fingerprint: str) -> Submitted:
        if previous.request_hash != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different request"
            )
        return Submitted(job=previous, replayed=True)

    async def _find_by_key(self, owner: str, key: str) -> Job | None:
        async with self.sessions() as session:
            found: Job | None = await session.scalar(
                select(Job).where(Job.owner == owner, Job.idempotency_key == key)
            )
            return found

    async def get(self, job_id: uuid.UUID, owner: str | None = None) -> Job | None:
        async with self.sessions() as session:
            job = await session.get(Job, job_id)
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
    ) -> tuple[list[Job], str | None]:
        """Newest first, keyset-paginated on (created_at, id): stable under inserts."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        if type_name is not None:
            query = query.where(Job.type == type_name)
        if state is not None:
            query = query.where(Job.state == state)
        if owner is not None:
            query = query.where(Job.owner == owner)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id)
                )
            )
        async with self.sessions() as session:
            jobs = list((await session.scalars(query)).all())
        if len(jobs) > limit:
            return jobs[:limit], encode_cursor(jobs[limit - 1])
        return jobs, None

    async def cancel(
        self, job_id: uuid.UUID, owner: str | None = None
    ) -> tuple[CancelOutcome, Job | None]:
        job = await self.get(job_id, owner)
        if job is None:
            return CancelOutcome.NOT_FOUND, None
        now = utcnow()
        error = "cancelled by request"
        async with self.sessions.begin() as session:
            queued = (
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED)
                    .values(
                        state=JobState.CANCELLED,
                        cancel_requested=True,
                        finished_at=now,
                        updated_at=now,
                        error=error,
                        event_seq=Job.event_seq + 1,
                    )
                    .returning(Job.attempts, Job.event_seq)
                )
            ).one_or_none()
            outcome = CancelOutcome.CANCELLED
            if queued is not None:  # its event stream ends here; a running job's, at its worker
                cancelled = state_event(JobState.CANCELLED, queued.attempts, error)
                await record_events_async(session, job_id, queued.event_seq, [cancelled])
            else:
                running = await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.RUNNING)
                    .values(cancel_requested=True, updated_at=now)
                )
                rowcount = running.rowcount  # type: ignore[attr-defined]
                outcome = CancelOutcome.REQUESTED if rowcount else CancelOutcome.ALREADY_FINAL
        return outcome, await self.get(job_id, owner)
