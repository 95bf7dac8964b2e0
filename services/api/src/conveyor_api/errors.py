"""Exceptions from the service layer, turned into clear HTTP answers in one place."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from conveyor_core.jobs import JOB_TYPES, AdmissionDenied
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor_api.metrics import SUBMISSIONS_REJECTED, is_submission
from conveyor_api.publisher import BrokerUnavailable
from conveyor_api.service import IdempotencyConflict, InvalidCursor, QueueQuotaExceeded

log = logging.getLogger("conveyor.api")

# A 422 echoes what it refused, but only so much (echoing a 10,000-key row would cost the
# gateway more than validating it did), and only as JSON can say it.
ECHOED_ITEMS = 20
ECHOED_CHARACTERS = 200
ECHOED_DEPTH = 3


def _short_input(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict | list):
        if len(value) > ECHOED_ITEMS or depth >= ECHOED_DEPTH:
            return f"<{type(value).__name__} of {len(value)} items>"
        if isinstance(value, dict):
            return {key: _short_input(item, depth + 1) for key, item in value.items()}
        return [_short_input(item, depth + 1) for item in value]
    if isinstance(value, str) and len(value) > ECHOED_CHARACTERS:
        return value[:ECHOED_CHARACTERS] + "..."
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # "NaN", "Infinity": the refused value, as it was sent
    return value


def validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    """The errors as FastAPI reports them, with each refused input shortened and a missing
    discriminator (`type`, ml.train's `model`) explained."""
    errors = []
    for item in error.errors():
        if item.get("type") == "union_tag_not_found":
            item = _missing_tag(item)
        if "input" in item:
            item = {**item, "input": _short_input(item["input"])}
        errors.append(item)
    return errors


def _missing_tag(item: dict[str, Any]) -> dict[str, Any]:
    """pydantic says "Unable to extract tag using discriminator 'model'": name the field,
    its allowed values and the fields the caller sent that no variant has (the typo)."""
    loc = tuple(item["loc"])
    job_type = next((JOB_TYPES[part] for part in loc if part in JOB_TYPES), None)
    if job_type is None:  # the submission's own `type`
        field, allowed, known = "type", sorted(JOB_TYPES), {"type", "params"}
    else:
        schema = job_type.params_adapter.json_schema()
        discriminator = schema.get("discriminator", {})
        field = discriminator.get("propertyName", "")
        allowed = sorted(discriminator.get("mapping", {}))
        known = {
            name
            for definition in schema.get("$defs", {}).values()
            for name in definition.get("properties", {})
        }
    sent = item.get("input")
    unknown = sorted(key for key in sent if key not in known) if isinstance(sent, dict) else []
    msg = f"Field required: `{field}`, one of {', '.join(allowed)}"
    if unknown:
        msg += f"; unknown field(s): {', '.join(unknown)}"
    return {**item, "type": "missing", "loc": (*loc, field), "msg": msg}


def _count_rejection(request: Request, reason: str) -> None:
    if is_submission(request.scope):
        SUBMISSIONS_REJECTED.labels(reason).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        _count_rejection(request, "validation")
        return JSONResponse({"detail": jsonable_encoder(validation_errors(error))}, 422)

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
