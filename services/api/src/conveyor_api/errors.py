"""Exceptions from the service layer, turned into clear HTTP answers in one place."""

from __future__ import annotations

import logging

from conveyor_core.jobs import AdmissionDenied
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor_api.metrics import SUBMISSIONS_REJECTED, is_submission
from conveyor_api.publisher import BrokerUnavailable
from conveyor_api.service import IdempotencyConflict, InvalidCursor, QueueQuotaExceeded

log = logging.getLogger("conveyor.api")


def _count_rejection(request: Request, reason: str) -> None:
    if is_submission(request.scope):
        SUBMISSIONS_REJECTED.labels(reason).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        _count_rejection(request, "validation")
        return await request_validation_exception_handler(request, error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        reason = {401: "auth", 422: "validation", 429: "rate_limited"}.get(error.status_code)
        if reason:
            _count_rejection(request, reason)
        return await http_exception_handler(request, error)

    @app.exception_handler(BrokerUnavailable)
    async def broker_unavailable(request: Request, error: BrokerUnavailable) -> JSONResponse:
        _count_rejection(request, "broker_unavailable")
        log.warning("submission refused: %s", error)
        return JSONResponse(
            status_code=503,
            content={
                "detail": f"job not accepted: message broker unavailable ({error}); retry later"
            },
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def store_unavailable(request: Request, error: Exception) -> JSONResponse:
        _count_rejection(request, "store_unavailable")
        log.warning("job store unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "job store unavailable; retry later"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(AdmissionDenied)
    async def admission_denied(request: Request, error: AdmissionDenied) -> JSONResponse:
        _count_rejection(request, "forbidden" if error.status_code == 403 else "limit")
        if error.status_code == 422:  # the documented validation-error shape
            detail: object = [{"loc": ["body", "params"], "msg": str(error), "type": "limit"}]
        else:
            detail = str(error)
        return JSONResponse(status_code=error.status_code, content={"detail": detail})

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(request: Request, error: IdempotencyConflict) -> JSONResponse:
        _count_rejection(request, "idempotency_conflict")
        return JSONResponse(status_code=409, content={"detail": str(error)})

    @app.exception_handler(QueueQuotaExceeded)
    async def queue_quota(request: Request, error: QueueQuotaExceeded) -> JSONResponse:
        _count_rejection(request, "queue_quota")
        return JSONResponse(
            status_code=429, content={"detail": str(error)}, headers={"Retry-After": "30"}
        )

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(_: Request, error: InvalidCursor) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "detail": [{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}]
            },
        )
