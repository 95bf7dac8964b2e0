"""`cmd.run`: run one command from the configured catalog, argv only, never a shell."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from conveyor_core.jobs.base import AdmissionDenied, JobType, StrictModel
from conveyor_core.settings import Settings


class CommandParams(StrictModel):
    command: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of a command in the catalog (CONVEYOR_COMMAND_CATALOG).",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Arguments passed as argv, literally: no shell expands them.",
    )
    timeout_s: int = Field(
        default=60,
        ge=1,
        le=86_400,
        description="Wall-clock limit; capped by CONVEYOR_CMD_MAX_TIMEOUT_S.",
    )
    stdin: str | None = Field(default=None, description="Text fed to the command's stdin.")
    ok_exit_codes: list[int] = Field(
        default=[0],
        min_length=1,
        max_length=256,
        description="Exit codes that mean success. Any other, or a timeout, ends the job "
        "`failed`, with its result (exit code, output) kept.",
    )

    @field_validator("args")
    @classmethod
    def _plain_strings(cls, args: list[str]) -> list[str]:
        for index, arg in enumerate(args):
            if "\x00" in arg:
                raise ValueError(f"args[{index}] contains a NUL byte")
            if len(arg) > 4096:
                raise ValueError(f"args[{index}] is longer than 4096 characters")
        return args


class CommandResult(BaseModel):
    """How the command ended. The job is `succeeded` only when the exit code is one of
    `ok_exit_codes` (default `[0]`) and the command did not time out; otherwise it is
    `failed`, its `error` says why, and this result is kept, as CI systems and Kubernetes
    Jobs do. A negative exit code is the signal that killed the command."""

    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = Field(description="True when stdout or stderr was cut at the capture limit.")
    timed_out: bool = False
    duration_s: float


class CommandNotAllowed(AdmissionDenied):
    pass


def admit_command(params: CommandParams, settings: Settings) -> None:
    """Refuse anything the catalog does not list, and limits the caller tries to exceed."""
    entry = settings.command_catalog.get(params.command)
    if entry is None:
        allowed = ", ".join(sorted(settings.command_catalog))
        raise CommandNotAllowed(
            f"command {params.command!r} is not in the command catalog; allowed: {allowed}"
        )
    if len(params.args) > entry.max_args:
        raise CommandNotAllowed(
            f"command {params.command!r} takes at most {entry.max_args} arguments"
        )
    if entry.arg_pattern is not None:
        _admit_args(params, entry.arg_pattern)
    if params.timeout_s > settings.cmd_max_timeout_s:
        raise CommandNotAllowed(
            f"timeout_s {params.timeout_s} exceeds the limit of {settings.cmd_max_timeout_s} s"
        )
    if params.stdin is not None and len(params.stdin.encode()) > settings.cmd_max_stdin_bytes:
        raise CommandNotAllowed(f"stdin exceeds the limit of {settings.cmd_max_stdin_bytes} bytes")


def _admit_args(params: CommandParams, pattern: str) -> None:
    # Whole-argument matches only: "-uf" must not pass because "-u" does.
    allowed = re.compile(f"(?:{pattern})")
    for index, arg in enumerate(params.args):
        if allowed.fullmatch(arg) is None:
            raise CommandNotAllowed(
                f"args[{index}] {arg!r} is not an argument command {params.command!r} accepts"
            )


def command_failure(params: CommandParams, result: CommandResult) -> str | None:
    """Why the command's outcome is a failed job, or None."""
    if result.timed_out:
        return f"the command timed out after {params.timeout_s} s and was stopped"
    if result.exit_code in params.ok_exit_codes:
        return None
    if result.exit_code < 0:
        return f"the command was killed by signal {-result.exit_code}"
    return f"the command exited with code {result.exit_code}"


def catalog_policy(settings: Settings) -> dict[str, Any]:
    """The command catalog as callers see it: what each command takes."""
    return {
        "commands": {
            name: {
                "max_args": entry.max_args,
                "arguments": entry.arg_pattern or "any",
                "description": entry.description,
            }
            for name, entry in sorted(settings.command_catalog.items())
        }
    }


CMD_RUN = JobType(
    name="cmd.run",
    worker="cmd",
    params=CommandParams,
    result=CommandResult,
    summary="Run a catalog command as argv (no shell), unprivileged, with limits.",
    example={"command": "echo", "args": ["hello", "$(id)"], "timeout_s": 10},
    # A minute above the default CONVEYOR_CMD_MAX_TIMEOUT_S (3600), so a command's own
    # timeout ends it first. Raise them together (the chart refuses one without the other).
    soft_time_limit_s=3600 + 60,
    time_limit_s=3600 + 120,
    admit=admit_command,
    failure=command_failure,
    policy=catalog_policy,
)
