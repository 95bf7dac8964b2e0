"""The gateway's request and response models, derived from the job type registry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from conveyor_core.jobs import JOB_TYPES
from conveyor_core.states import JobState
from pydantic import BaseModel, ConfigDict, Field, create_model


def _submission_model(name: str) -> type[BaseModel]:
    job_type = JOB_TYPES[name]
    title = "".join(part.capitalize() for part in name.split(".")) + "Submission"
    config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": job_type.summary,
            "examples": [{"type": name, "params": job_type.example}],
        },
    )
    fields: dict[str, Any] = {
        "type": (Literal[name], Field(description=job_type.summary)),
        "params": (job_type.params, ...),
    }
    return create_model(title, __config__=config, **fields)


SUBMISSION_MODELS = {name: _submission_model(name) for name in JOB_TYPES}

if TYPE_CHECKING:

    class JobSubmission(BaseModel):
        type: str
        params: Any

else:
    # One body model per job type, told apart by `type`: a bad param is reported under its
    # exact path (body.<type>.params.<field>) and every params model appears in OpenAPI.
    JobSubmission = Annotated[
        Union[tuple(SUBMISSION_MODELS.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]

SUBMISSION_EXAMPLES = {
    name: {
        "summary": JOB_TYPES[name].summary,
        "value": {"type": name, "params": JOB_TYPES[name].example},
    }
    for name in JOB_TYPES
}


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


class Problem(BaseModel):
    detail: Any


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
