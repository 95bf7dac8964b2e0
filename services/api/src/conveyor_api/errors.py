"""Exceptions from the service layer, turned into clear HTTP answers in one place."""

from __future__ import annotations

import logging

from conveyor_core.jobs import AdmissionDenied
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor_api.publisher import BrokerUnavailable
from conveyor_api.service import IdempotencyConflict, InvalidCursor

log = logging.getLogger("conveyor.api")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerUnavailable)
    async def broker_unavailable(_: Request, error: BrokerUnavailable) -> JSONResponse:
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
    async def store_unavailable(_: Request, error: Exception) -> JSONResponse:
        log.warning("job store unavailable: %s", error)
        return JSONResponse(
            status_code=503,
            content={"detail": "job store unavailable; retry later"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(AdmissionDenied)
    async def admission_denied(_: Request, error: AdmissionDenied) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"detail": str(error)})

    @app.exception_handler(IdempotencyConflict)
    async def idempotency_conflict(_: Request, error: IdempotencyConflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(error)})

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(_: Request, error: InvalidCursor) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "detail": [{"loc": ["query", "cursor"], "msg": str(error), "type": "value_error"}]
            },
        )
