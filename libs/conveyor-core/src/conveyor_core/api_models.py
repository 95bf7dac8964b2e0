"""The gateway's wire models: what `/v1` answers, shared by the gateway and conveyor-client.

Only pydantic, `conveyor_core.states` and `conveyor_core.event_contract` are imported here, so the
client can use these models without the job store, Celery or the artifact store. The
request bodies (one submission model per job type) stay in the gateway, since they need
the job type registry.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The event stream's payloads are declared with the stream (conveyor_core.event_contract); they are
# part of the wire contract too, so they are importable from here as well.
from conveyor_core.event_contract import OutputEvent, ProgressEvent, StateEvent
from conveyor_core.states import JobState


class JobAccepted(BaseModel):
    id: uuid.UUID
    type: str
    state: JobState
    created_at: datetime


class JobView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: str
    state: JobState
    progress: float = Field(ge=0, le=1)
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    artifacts: list[str]


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


class JobTypeInfo(BaseModel):
    name: str
    summary: str
    queue: str
    params_schema: dict[str, Any]
    example: dict[str, Any]
    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="What this deployment allows beyond the schema: for cmd.run, its command "
        "catalog (each command's argument limit and accepted arguments).",
    )


class FileStored(BaseModel):
    path: str = Field(description="Pass this as a job's `source`.")
    size: int


class QueueStatus(BaseModel):
    """One job type's RabbitMQ queue, as a passive declare reports it."""

    job_type: str
    queue: str
    messages: int | None = Field(
        description="Messages ready for a worker (jobs waiting); running jobs are not counted. "
        "Null when the queue does not exist."
    )
    consumers: int | None = Field(description="Worker processes consuming the queue.")
    dead_letter_queue: str
    dead_letter_messages: int | None = Field(
        description="Messages of jobs that exhausted their attempts."
    )


class Problem(BaseModel):
    detail: Any


class Health(BaseModel):
    """`ok`; `degraded`: it serves, but RabbitMQ is unreachable, so submissions get 503;
    `unavailable`: the job store does not answer, so it serves nothing."""

    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


__all__ = [
    "FileStored",
    "Health",
    "JobAccepted",
    "JobPage",
    "JobTypeInfo",
    "JobView",
    "OutputEvent",
    "Problem",
    "ProgressEvent",
    "QueueStatus",
    "StateEvent",
]
