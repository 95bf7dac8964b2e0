"""The gateway's request models, derived from the job type registry.

The response models are the shared contract's (`conveyor_core.api_models`), which the
Python client uses too; they are re-exported here for the routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from conveyor_core.api_models import (
    FileStored,
    Health,
    JobAccepted,
    JobPage,
    JobTypeInfo,
    JobView,
    Problem,
    QueueStatus,
)
from conveyor_core.jobs import JOB_TYPES
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

__all__ = [
    "SUBMISSION_EXAMPLES",
    "SUBMISSION_MODELS",
    "FileStored",
    "Health",
    "JobAccepted",
    "JobPage",
    "JobSubmission",
    "JobTypeInfo",
    "JobView",
    "Problem",
    "QueueStatus",
]
