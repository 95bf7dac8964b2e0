"""Conveyor's Python client: submit jobs, follow them, fetch their results and artifacts.

    from conveyor_client import ConveyorClient

    with ConveyorClient("http://127.0.0.1:8000") as conveyor:
        job = conveyor.submit("ml.train", {"dataset": "iris"})
        print(conveyor.wait(job.id).result)

`AsyncConveyorClient` is the same API for asyncio. Models are the shared contract's
(`conveyor_core.api_models`); errors are in `conveyor_client.errors`.
"""

from conveyor_core.api_models import (
    FileStored,
    Health,
    JobAccepted,
    JobPage,
    JobTypeInfo,
    JobView,
    OutputEvent,
    ProgressEvent,
    QueueStatus,
    StateEvent,
)
from conveyor_core.states import JobState

from conveyor_client.client import AsyncConveyorClient, ConveyorClient
from conveyor_client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    ConveyorError,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from conveyor_client.job_stream import JobEvent

__all__ = [
    "ApiError",
    "AsyncConveyorClient",
    "Conflict",
    "ConnectionFailed",
    "ConveyorClient",
    "ConveyorError",
    "FieldError",
    "FileStored",
    "Forbidden",
    "Health",
    "JobAccepted",
    "JobEvent",
    "JobPage",
    "JobState",
    "JobTypeInfo",
    "JobView",
    "NotFound",
    "OutputEvent",
    "PayloadTooLarge",
    "ProgressEvent",
    "QueueStatus",
    "RateLimited",
    "ServerError",
    "StateEvent",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
