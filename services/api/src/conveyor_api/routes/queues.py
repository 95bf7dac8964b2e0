"""`/v1/queues`: each job type's queue depth and consumers, for operators (admin keys)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from conveyor_api.auth import PrincipalDep
from conveyor_api.deps import PublisherDep
from conveyor_api.schemas import Problem, QueueStatus

router = APIRouter(prefix="/v1", tags=["queues"])


@router.get(
    "/queues",
    response_model=list[QueueStatus],
    responses={
        403: {"model": Problem, "description": "Not an admin key"},
        503: {"model": Problem, "description": "Broker unavailable"},
    },
)
async def queue_status(publisher: PublisherDep, caller: PrincipalDep) -> list[QueueStatus]:
    """Jobs waiting in each job type's queue, its consumers and its dead letters.

    Read through the gateway's own RabbitMQ connection, so callers need no broker
    credentials. Admin keys only: queue depths describe every key's jobs.
    """
    if not caller.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "queue status needs an admin key")
    return await publisher.queue_status()
