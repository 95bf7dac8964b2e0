"""The job table: the single source of truth for job state, progress, results and errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from conveyor_core.states import JobState

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoredText(TypeDecorator[str]):
    """Text every backend stores: NUL, which PostgreSQL's text refuses, becomes U+FFFD.

    An error message can quote what a job read (a file's cell, a command's output).
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    params: Mapped[Any] = mapped_column(JSONType)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(StoredText, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    artifacts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # The attempt whose folder holds `artifacts` (each run writes its own, and only the run
    # that records the outcome publishes it); NULL for jobs finished before attempts had
    # folders, whose files sit directly in the job's folder.
    artifacts_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    origin: Mapped[str] = mapped_column(String(32), default="v1")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set once RabbitMQ confirmed the job's message; a queued row without it is repaired.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when a long job's worker acked its message before RabbitMQ's consumer_timeout:
    # from then on the heartbeat reaper, not a redelivery, recovers the job if it is lost.
    handed_over_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Number of the job's latest event (job_events.seq), raised in the very write that
    # stores the event: the row lock orders a job's events as their writes commit.
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_type_state_created", "type", "state", "created_at"),
        Index("ix_jobs_state_heartbeat", "state", "heartbeat_at"),
        Index("ux_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
        Index("ix_jobs_owner_state", "owner", "state"),
        Index("ix_jobs_state_dispatched", "state", "dispatched_at"),
        Index("ix_jobs_finished", "finished_at"),
    )


class JobEvent(Base):
    """One entry of a job's live progress stream (GET /v1/jobs/{id}/events)."""

    __tablename__ = "job_events"

    # Store-wide and never reused (AUTOINCREMENT on SQLite), so the gateway's SQLite poll
    # can follow every job's events with one cursor.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # the SSE id: 1, 2, 3... within one job
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ux_job_events_job_seq", "job_id", "seq", unique=True),
        Index("ix_job_events_created", "created_at"),
        {"sqlite_autoincrement": True},
    )


class ApiKey(Base):
    """A caller's credential. Only a SHA-256 of the secret is kept; the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
