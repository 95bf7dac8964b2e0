"""`cmd.run`: run one catalog command in a sandbox and report how it ended.

A non-zero exit or a timeout is a result the caller reads, not a job failure; the job
fails only when the command may not or cannot run, and is cancelled when asked to.
"""

from __future__ import annotations

import os
import time

from conveyor_core.jobs.base import AdmissionDenied
from conveyor_core.jobs.cmd import CommandParams, CommandResult, admit_command
from conveyor_core.settings import Settings
from conveyor_core.worker.context import JobCancelled, JobContext, JobFailed

from conveyor_worker_cmd.confine import Isolation, make_non_dumpable, probe
from conveyor_worker_cmd.proctree import become_subreaper
from conveyor_worker_cmd.sandbox import (
    Identity,
    Limits,
    Sandbox,
    SandboxError,
    identity_for,
    private_workdir,
    resolve_executable,
)

TIMEOUT_KILL_GRACE_S = 2.0
CANCEL_KILL_GRACE_S = 2.0
POLL_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 1.0
START_PROGRESS = 0.05
RUNNING_PROGRESS_CAP = 0.95


def run(params: CommandParams, ctx: JobContext) -> CommandResult:
    """Run `params.command` with `params.args` as argv and return its exit and output."""
    settings = ctx.settings
    argv = [_admitted_executable(params, settings), *params.args]
    limits = _limits(params, settings)
    stdin = params.stdin.encode() if params.stdin is not None else None
    try:
        identity = identity_for(settings.cmd_run_as_user)
    except SandboxError as error:
        raise JobFailed(str(error)) from error
    isolation = _required_isolation(identity, settings)
    make_non_dumpable()  # before any command exists that could read this process
    become_subreaper()  # so orphans of the command come back to us to be killed and reaped
    ctx.report_progress(START_PROGRESS)
    started = time.monotonic()
    with private_workdir(identity) as workdir:
        try:
            sandbox = Sandbox(
                argv,
                workdir=workdir,
                identity=identity,
                isolation=isolation,
                limits=limits,
                stdin=stdin,
                stop_grace_s=_cancel_grace_s(settings),
                on_line=ctx.emit_output,  # lines reach the job's event stream as printed
            )
        except SandboxError as error:
            raise JobFailed(str(error)) from error
        with sandbox:
            timed_out = _supervise(sandbox, ctx, limits.timeout_s)
            duration_s = time.monotonic() - started
            output = sandbox.finish()
    if ctx.cancel_event.is_set():
        raise JobCancelled()
    ctx.report_progress(1.0)
    return CommandResult(
        exit_code=output.exit_code,
        stdout=output.stdout.decode("utf-8", errors="replace"),
        stderr=output.stderr.decode("utf-8", errors="replace"),
        truncated=output.truncated,
        timed_out=timed_out,
        duration_s=round(duration_s, 3),
    )


def _admitted_executable(params: CommandParams, settings: Settings) -> str:
    """Re-check admission here (the gateway may be bypassed) and resolve the executable."""
    try:
        admit_command(params, settings)
    except AdmissionDenied as denied:
        raise JobFailed(str(denied)) from denied
    name = settings.command_catalog[params.command].executable
    executable = resolve_executable(name)
    if executable is None:
        raise JobFailed(f"executable {name!r} of command {params.command!r} was not found")
    return executable


def isolation_for(identity: Identity | None) -> Isolation:
    """What confinement applies to commands run as `identity` (None: the worker's uid)."""
    if identity is None:
        return probe(os.geteuid(), os.getegid())
    return probe(identity.uid, identity.gid)


def _required_isolation(identity: Identity | None, settings: Settings) -> Isolation:
    isolation = isolation_for(identity)
    if not isolation.complete and not settings.cmd_allow_weak_isolation:
        raise JobFailed(
            "cmd.run refused: this host cannot isolate commands ("
            + "; ".join(isolation.gaps())
            + "). Set CONVEYOR_CMD_ALLOW_WEAK_ISOLATION=true to run them anyway."
        )
    return isolation


def _limits(params: CommandParams, settings: Settings) -> Limits:
    return Limits(
        timeout_s=min(params.timeout_s, settings.cmd_max_timeout_s),
        max_output_bytes=settings.cmd_max_output_bytes,
        max_memory_bytes=settings.cmd_max_memory_bytes,
        max_processes=settings.cmd_max_processes,
        max_open_files=settings.cmd_max_open_files,
    )


def _cancel_grace_s(settings: Settings) -> float:
    # Stop well inside the grace after which the runtime kills the whole pool process.
    return min(CANCEL_KILL_GRACE_S, float(settings.cancel_grace_s) / 2)


def _supervise(sandbox: Sandbox, ctx: JobContext, timeout_s: float) -> bool:
    """Pump I/O until the command exits; stop it on timeout or cancel. True if timed out."""
    undo_cancel_hook = ctx.on_cancel(lambda: sandbox.stop(_cancel_grace_s(ctx.settings)))
    try:
        return _wait_for_exit(sandbox, ctx, timeout_s)
    finally:
        undo_cancel_hook()


def _wait_for_exit(sandbox: Sandbox, ctx: JobContext, timeout_s: float) -> bool:
    started = time.monotonic()
    deadline = started + timeout_s
    next_report = started + PROGRESS_INTERVAL_S
    output_interval = ctx.settings.events_output_interval_s
    next_output = started + output_interval
    timed_out = False
    while sandbox.step(POLL_INTERVAL_S):
        now = time.monotonic()
        if now >= deadline and not timed_out:
            timed_out = True
            sandbox.stop(TIMEOUT_KILL_GRACE_S)
        if now >= next_output:
            ctx.flush_output()  # the lines printed since the last flush, in one write
            next_output = now + output_interval
        if now >= next_report:
            # Raises JobCancelled on a cancel; the sandbox's exit then kills the command.
            ctx.report_progress(_running_progress(now - started, timeout_s))
            next_report = now + PROGRESS_INTERVAL_S
    return timed_out


def _running_progress(elapsed_s: float, timeout_s: float) -> float:
    return min(RUNNING_PROGRESS_CAP, max(START_PROGRESS, elapsed_s / timeout_s))
