"""The original blog pattern's endpoints, same paths and shapes, on Conveyor's machinery.

`/execute` goes through the command catalog like `cmd.run` (parsed with shlex, never a
shell); unknown ids are 404 here, where the original answered PENDING forever.
"""

from __future__ import annotations

import shlex
import uuid
from typing import Annotated, Any

from conveyor_core.jobs import CMD_RUN, DATA_TRANSFORM, ML_TRAIN, AdmissionDenied, JobType
from conveyor_core.states import JobState
from conveyor_core.store.gateway_ops import JobRow
from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from conveyor_api.auth import Principal, PrincipalDep
from conveyor_api.deps import JobsDep, SettingsDep
from conveyor_api.ratelimit import SubmitterDep
from conveyor_api.schemas import Problem

router = APIRouter(tags=["compatibility (blog pattern)"])

SAMPLE_ROWS = [{"value": 10}, {"value": 20}, {"value": 30}]
CELERY_STATUS = {
    JobState.QUEUED: "PENDING",
    JobState.RUNNING: "STARTED",
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
}


class TaskSubmitted(BaseModel):
    task_id: uuid.UUID


class TaskStatus(BaseModel):
    status: str = Field(examples=["PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"])


class TaskResult(BaseModel):
    result: Any


class ValueRow(BaseModel):
    value: int | float


def _invalid_command(message: str) -> RequestValidationError:
    # The documented 422 shape, like every other validation error.
    return RequestValidationError(
        [{"loc": ("query", "command"), "msg": message, "type": "value_error"}]
    )


async def _submit(
    jobs: JobsDep,
    settings: SettingsDep,
    caller: Principal,
    job_type: JobType,
    raw_params: dict[str, Any],
    origin: str,
) -> TaskSubmitted:
    try:
        params = job_type.parse_params(raw_params)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from error
    job_type.check_admission(params, settings)
    dumped = job_type.params_adapter.dump_python(params, mode="json")
    submitted = await jobs.submit(job_type, dumped, origin=origin, owner=caller.owner)
    return TaskSubmitted(task_id=submitted.id)


@router.post("/train", response_model=TaskSubmitted)
async def train(jobs: JobsDep, settings: SettingsDep, caller: SubmitterDep) -> TaskSubmitted:
    """Train the default model (logistic regression on iris)."""
    return await _submit(
        jobs,
        settings,
        caller,
        ML_TRAIN,
        {"dataset": "iris", "model": "logistic_regression"},
        "compat.train",
    )


@router.post(
    "/execute",
    response_model=TaskSubmitted,
    responses={403: {"model": Problem, "description": "Command not in the catalog"}},
)
async def execute(
    jobs: JobsDep,
    settings: SettingsDep,
    caller: SubmitterDep,
    command: Annotated[str, Query(min_length=1, max_length=4096)],
) -> TaskSubmitted:
    """Run a catalog command. The string is split like a shell would, but no shell runs it."""
    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise _invalid_command(f"command cannot be parsed: {error}") from error
    if not argv:
        raise _invalid_command("command is empty")
    if argv[0] not in settings.command_catalog:
        allowed = ", ".join(sorted(settings.command_catalog))
        raise AdmissionDenied(
            f"command {argv[0]!r} is not allowed: only catalog commands run, without a shell "
            f"(allowed: {allowed})"
        )
    return await _submit(
        jobs, settings, caller, CMD_RUN, {"command": argv[0], "args": argv[1:]}, "compat.execute"
    )


@router.post("/transform", response_model=TaskSubmitted)
async def transform(
    jobs: JobsDep,
    settings: SettingsDep,
    caller: SubmitterDep,
    data: Annotated[list[ValueRow] | None, Body(max_length=10_000)] = None,
) -> TaskSubmitted:
    """Double each `value` (the sample [10, 20, 30] when no body is sent)."""
    rows = [row.model_dump() for row in data] if data is not None else SAMPLE_ROWS
    params = {
        "rows": rows,
        "steps": [
            {"op": "compute", "column": "value", "left": "value", "operator": "mul", "right": 2},
            {"op": "select", "columns": ["value"]},
        ],
        "output": "inline",
    }
    return await _submit(jobs, settings, caller, DATA_TRANSFORM, params, "compat.transform")


async def _job_or_404(jobs: JobsDep, caller: Principal, task_id: uuid.UUID) -> JobRow:
    job = await jobs.get(task_id, caller.owner_filter)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"task {task_id} not found")
    return job


@router.get("/status/{task_id}", response_model=TaskStatus, responses={404: {"model": Problem}})
async def task_status(task_id: uuid.UUID, jobs: JobsDep, caller: PrincipalDep) -> TaskStatus:
    job = await _job_or_404(jobs, caller, task_id)
    return TaskStatus(status=CELERY_STATUS[JobState(job.state)])


def _compat_result(job: JobRow) -> Any:
    """The result in the shape the original endpoints returned."""
    if job.state == JobState.FAILED:
        return job.error
    if job.state != JobState.SUCCEEDED or job.result is None:
        return None
    if job.origin == "compat.transform":
        return [row["value"] for row in job.result.get("rows") or []]
    if job.origin == "compat.execute":
        return job.result.get("stdout")
    return job.result


@router.get("/result/{task_id}", response_model=TaskResult, responses={404: {"model": Problem}})
async def task_result(task_id: uuid.UUID, jobs: JobsDep, caller: PrincipalDep) -> TaskResult:
    job = await _job_or_404(jobs, caller, task_id)
    return TaskResult(result=_compat_result(job))
