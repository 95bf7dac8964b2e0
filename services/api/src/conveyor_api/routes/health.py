"""Liveness and readiness."""

from __future__ import annotations

from conveyor_core.store import gateway_ops
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from conveyor_api.schemas import Health
from conveyor_api.unit_of_work import WorkRunner

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (it answers); says nothing of its dependencies."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    """Whether this process can serve: 200 while the job store answers.

    RabbitMQ being unreachable does not make it unready: job status, listing, events,
    artifacts and the console still work, and only submissions get 503. Taking every
    replica out of the Service for it would fail all of those at the ingress too. The
    broker's state is in `checks` (status `degraded`), in `conveyor_api_broker_connected`
    and in its alert.
    """
    checks = {"broker": "ok", "job_store": "ok"}
    if not request.app.state.publisher.is_connected:
        checks["broker"] = "unreachable"
    runner: WorkRunner = request.app.state.runner
    try:
        await runner.read(gateway_ops.ping)
    except Exception as error:
        checks["job_store"] = f"unreachable: {type(error).__name__}"
    if checks["job_store"] != "ok":
        status = "unavailable"
    else:
        status = "ok" if checks["broker"] == "ok" else "degraded"
    body = Health(status=status, checks=checks)
    code = 503 if status == "unavailable" else 200
    return JSONResponse(status_code=code, content=body.model_dump())
