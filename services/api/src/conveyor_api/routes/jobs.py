"""`/v1/jobs`: submit, inspect, list and cancel jobs, and download their artifacts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from conveyor_core.artifact_paths import ARTIFACT_NAME_PATTERN, job_artifact_path
from conveyor_core.jobs import JOB_TYPES
from conveyor_core.states import JobState
from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from conveyor_api.auth import Principal, PrincipalDep, authenticate
from conveyor_api.deps import ArtifactsDep, JobsDep, SettingsDep, app_settings, job_service
from conveyor_api.gateway_app import HotRoute
from conveyor_api.ratelimit import SubmitterDep, take_submit_token
from conveyor_api.schemas import (
    SUBMISSION_EXAMPLES,
    JobAccepted,
    JobPage,
    JobSubmission,
    JobTypeInfo,
    JobView,
    Problem,
)
from conveyor_api.service import CancelOutcome

router = APIRouter(prefix="/v1", tags=["jobs"])

JobTypeName = Annotated[
    str, Query(pattern="|".join(rf"^{n}$" for n in JOB_TYPES).replace(".", r"\."))
]
IDEMPOTENCY_KEY_MAX_LENGTH = 255
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such job"}}


def json_response(
    model: BaseModel, status_code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None
) -> Response:
    """The model as JSON, serialised once.

    A model returned from a handler is validated against its response_model again before
    it is dumped; the routes that return this still declare response_model for OpenAPI.
    """
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


def _not_found(job_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses={
        403: {"model": Problem, "description": "Refused by policy (e.g. command not in catalog)"},
        409: {"model": Problem, "description": "Idempotency-Key reused with another request"},
        503: {"model": Problem, "description": "Broker or job store unavailable; nothing queued"},
    },
)
async def submit_job(
    submission: Annotated[JobSubmission, Body(openapi_examples=SUBMISSION_EXAMPLES)],
    request: Request,
    caller: SubmitterDep,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX_LENGTH)] = None,
) -> Response:
    """Queue a job. A 202 means the job row is committed and RabbitMQ confirmed the message."""
    return await accept(request, submission, caller, idempotency_key)


async def accept(
    request: Request, submission: JobSubmission, caller: Principal, idempotency_key: str | None
) -> Response:
    """A validated submission from an authenticated caller, queued: its 202.

    Shared with the plain-ASGI `submit` below, which validates the body itself.
    """
    jobs, settings = job_service(request), app_settings(request)  # hot path: see deps.py
    job_type = JOB_TYPES[submission.type]
    job_type.check_admission(submission.params, settings)
    await jobs.check_inputs(job_type, submission.params, caller.owner, caller.admin)
    params = job_type.params_adapter.dump_python(submission.params, mode="json")
    submitted = await jobs.submit(
        job_type, params, idempotency_key=idempotency_key, owner=caller.owner
    )
    headers = {"Location": f"/v1/jobs/{submitted.id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    accepted = JobAccepted(
        id=submitted.id,
        type=submitted.type,
        state=submitted.state,
        created_at=submitted.created_at,
    )
    return json_response(accepted, status.HTTP_202_ACCEPTED, headers)


@router.get("/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND)
async def get_job(job_id: uuid.UUID, request: Request, caller: PrincipalDep) -> Response:
    return await job_state(request, job_id, caller)


async def job_state(request: Request, job_id: uuid.UUID, caller: Principal) -> Response:
    """The job as the caller may see it; shared with the plain-ASGI `poll` below."""
    job = await job_service(request).get(job_id, caller.owner_filter)  # hot path: see deps.py
    if job is None:
        raise _not_found(job_id)
    return json_response(JobView.model_validate(job))


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    jobs: JobsDep,
    caller: PrincipalDep,
    type: JobTypeName | None = None,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    """Jobs newest first. Follow `next_cursor` for older pages."""
    items, next_cursor = await jobs.list(
        type_name=type, state=state, limit=limit, cursor=cursor, owner=caller.owner_filter
    )
    return JobPage(items=[JobView.model_validate(job) for job in items], next_cursor=next_cursor)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobView,
    responses={
        200: {"description": "The job was queued and is now cancelled; it will never start"},
        202: {"description": "The job is running; its worker is stopping it"},
        409: {"model": Problem, "description": "The job already finished"},
        **NOT_FOUND,
    },
)
async def cancel_job(
    job_id: uuid.UUID, jobs: JobsDep, caller: PrincipalDep, response: Response
) -> JobView:
    outcome, job = await jobs.cancel(job_id, caller.owner_filter)
    if outcome is CancelOutcome.NOT_FOUND or job is None:
        raise _not_found(job_id)
    if outcome is CancelOutcome.ALREADY_FINAL:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job {job_id} already finished ({job.state}); nothing to cancel",
        )
    if outcome is CancelOutcome.REQUESTED:
        response.status_code = status.HTTP_202_ACCEPTED
    return JobView.model_validate(job)


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **NOT_FOUND},
)
async def download_artifact(
    job_id: uuid.UUID,
    name: Annotated[str, Path(pattern=ARTIFACT_NAME_PATTERN)],
    jobs: JobsDep,
    artifacts: ArtifactsDep,
    caller: PrincipalDep,
) -> Response:
    """Download a file the job produced (e.g. `model.skops`, `output.parquet`)."""
    job = await jobs.get(job_id, caller.owner_filter)
    if job is None:
        raise _not_found(job_id)
    if name not in job.artifacts:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"job {job_id} has no artifact {name!r}; it has {job.artifacts}",
        )
    path = job_artifact_path(job_id, name, job.artifacts_attempt)
    if artifacts.is_local:
        return FileResponse(
            artifacts.url(path), filename=name, media_type="application/octet-stream"
        )

    def chunks() -> Iterator[bytes]:
        with artifacts.open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/job-types", response_model=list[JobTypeInfo], tags=["job types"])
async def list_job_types(settings: SettingsDep) -> list[JobTypeInfo]:
    """Every job type with its params JSON Schema, an example, and this deployment's policy."""
    return [
        JobTypeInfo(
            name=t.name,
            summary=t.summary,
            queue=t.queue,
            params_schema=t.params_adapter.json_schema(),
            example=t.example,
            policy=t.policy_of(settings),
        )
        for t in JOB_TYPES.values()
    ]


# --- The plain-ASGI answers of POST /v1/jobs and GET /v1/jobs/{id} (gateway_app.py): the
# same `accept` and `job_state` as the routes above, without FastAPI's per-request work.

_SUBMISSION: TypeAdapter[JobSubmission] = TypeAdapter(JobSubmission)
_JOB_ID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)


def _is_json(content_type: str | None) -> bool:
    # Only the plain spellings; anything else is FastAPI's to judge.
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def submit(request: Request) -> Response | None:
    """POST /v1/jobs."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        return None
    if not _is_json(request.headers.get("content-type")):
        return None
    # Before any work on the body: an anonymous caller gets its 401 for free.
    caller = await authenticate(request)
    body = await request.body()
    try:
        submission = _SUBMISSION.validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if any(item["type"] == "json_invalid" for item in errors):
            return None  # broken JSON: FastAPI's own answer, which names the position
        # Answered here, as FastAPI words it: validating a large body twice is no answer.
        in_body = [{**item, "loc": ("body", *item["loc"])} for item in errors]
        raise RequestValidationError(in_body, body=body) from None
    take_submit_token(request, caller)
    return await accept(request, submission, caller, idempotency_key)


async def poll(request: Request) -> Response | None:
    """GET /v1/jobs/{job_id}."""
    try:
        job_id = _JOB_ID.validate_python(request.path_params["job_id"])
    except ValidationError:
        return None
    return await job_state(request, job_id, await authenticate(request))


HOT_ROUTES = (HotRoute("POST", "/v1/jobs", submit), HotRoute("GET", "/v1/jobs/{job_id}", poll))
