"""The live progress stream's contract: event kinds and the JSON each one carries.

`GET /v1/jobs/{id}/events` sends Server-Sent Events, each with `id: <n>` (the job's event
number, usable as `Last-Event-ID`), `event: <kind>` and `data: <one line of JSON>`:

- `snapshot`: the job as `GET /v1/jobs/{id}` shows it; first, when the client has no
  `Last-Event-ID`.
- `state`: a state change ({state, attempts, error, result on succeeded, at}).
- `progress`: the job reported progress ({progress, at}).
- `output`: a line a `cmd.run` command wrote ({stream, line, at}).

The stream ends after the event that carries a final state. Events are durable rows
(`job_events`), numbered per job in the same write that changes the job, so a resumed
stream has neither gaps nor duplicates. docs/event-stream.md has the whole contract.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from conveyor_core.states import JobState

# PostgreSQL LISTEN/NOTIFY channel; the payload is the job id whose events changed.
NOTIFY_CHANNEL = "conveyor_job_events"
# One output event carries at most this much of a line; a longer line arrives in pieces.
MAX_OUTPUT_LINE_BYTES = 4096


class EventKind(StrEnum):
    SNAPSHOT = "snapshot"
    STATE = "state"
    PROGRESS = "progress"
    OUTPUT = "output"


class StateEvent(BaseModel):
    state: JobState
    attempts: int
    error: str | None
    result: dict[str, Any] | None = Field(default=None, description="Only on `succeeded`.")
    at: datetime


class ProgressEvent(BaseModel):
    progress: float = Field(ge=0, le=1)
    at: datetime


OutputStream = Literal["stdout", "stderr"]


class OutputEvent(BaseModel):
    stream: OutputStream
    line: str = Field(description="One line, without its line break.")
    at: datetime = Field(description="When the worker read the line.")
