"""The `conveyor` command: submit, follow and inspect jobs from a terminal or a script."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from conveyor_core.api_models import (
    FileStored,
    JobAccepted,
    JobPage,
    JobTypeInfo,
    JobView,
    OutputEvent,
    ProgressEvent,
    StateEvent,
)
from conveyor_core.states import JobState
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from conveyor_client.cli import render
from conveyor_client.cli.cluster import ClusterUnavailable, ClusterView, read_cluster
from conveyor_client.cli.options import ApiKeyOpt, OutputFormat, OutputOpt, UrlOpt, build_params
from conveyor_client.client import ConveyorClient
from conveyor_client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    ConveyorError,
    NotFound,
    ServerError,
    Unavailable,
    ValidationFailed,
)
from conveyor_client.job_stream import JobEvent

app = typer.Typer(
    name="conveyor",
    help="Submit, follow and inspect Conveyor jobs. Every command takes --output json.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _width(stream: Any) -> int | None:
    """Into a pipe or a file rich cuts tables and wraps lines at 80 columns (`succe` for
    `succeeded`): there, unless COLUMNS says otherwise, lines are as long as their values."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 10_000


out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, width=_width(sys.stderr))


class ExitCode(IntEnum):
    """What a script can tell apart; documented in docs/cli.md."""

    OK = 0
    JOB_FAILED = 1
    USAGE = 2  # a bad flag (click's own code) or a request the gateway found invalid (422)
    JOB_CANCELLED = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5  # gateway unreachable, or its broker / job store down (503, 5xx)
    REFUSED = 6  # 401, 403, 409, 413, 429: not allowed, or not now


FINAL_EXIT = {
    JobState.SUCCEEDED: ExitCode.OK,
    JobState.FAILED: ExitCode.JOB_FAILED,
    JobState.CANCELLED: ExitCode.JOB_CANCELLED,
}


def _error_code(error: ConveyorError) -> ExitCode:
    if isinstance(error, ConnectionFailed | Unavailable | ServerError):
        return ExitCode.UNAVAILABLE
    if isinstance(error, ValidationFailed):
        return ExitCode.USAGE
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND
    return ExitCode.REFUSED


def _error_json(error: ConveyorError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": str(error), "exit_code": int(_error_code(error))}
    if isinstance(error, ApiError):
        body |= {"status": error.status, "detail": error.detail}
        if error.retry_after is not None:
            body["retry_after"] = error.retry_after
    if isinstance(error, ValidationFailed):
        body["fields"] = [{"field": f.field, "message": f.msg} for f in error.fields]
    if isinstance(error, ConnectionFailed):
        body["url"] = error.url
    return body


def _explain(error: ConveyorError) -> str:
    if isinstance(error, ConnectionFailed):
        return (
            f"{error}\nIs the gateway running there? Point at another one with --url or "
            "CONVEYOR_URL."
        )
    if isinstance(error, ValidationFailed) and error.fields:
        lines = "\n".join(f"  {field.field}: {field.msg}" for field in error.fields)
        return f"the gateway refused the request ({error.status}):\n{lines}"
    if isinstance(error, ApiError):
        detail = error.detail if isinstance(error.detail, str) else repr(error.detail)
        text = f"{detail} ({error.status})"
        if error.retry_after is not None:
            text += f"; retry after {error.retry_after:g}s"
        if error.status == 401:
            text += "\nPass an API key with --api-key or CONVEYOR_API_KEY."
        return text
    return str(error)


@contextlib.contextmanager
def reported(output: OutputFormat) -> Iterator[None]:
    """Turn the client's errors into a message on stderr and a distinct exit code."""
    try:
        yield
    except ConveyorError as error:
        if output is OutputFormat.JSON:
            render.echo_json(_error_json(error), err=True)
        else:
            err.print(f"[bold red]error:[/] {escape(_explain(error))}")
        raise typer.Exit(_error_code(error)) from None


Answer = TypeVar("Answer")


@dataclass(frozen=True)
class CommandSession:
    """What a command works with: the gateway's client, and where its answer goes."""

    client: ConveyorClient
    output: OutputFormat

    @property
    def json(self) -> bool:
        return self.output is OutputFormat.JSON

    def show(self, answer: Answer, for_people: Callable[[Answer], None]) -> None:
        """The answer as JSON with `--output json`, else printed by `for_people`."""
        if self.json:
            render.echo_json(answer)
        else:
            for_people(answer)


# The options of every command that calls the gateway, after the command's own.
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
SHARED_OPTIONS = (
    inspect.Parameter("url", _KEYWORD, default=None, annotation=UrlOpt),
    inspect.Parameter("api_key", _KEYWORD, default=None, annotation=ApiKeyOpt),
    inspect.Parameter("output", _KEYWORD, default=OutputFormat.TABLE, annotation=OutputOpt),
)

CommandBody = Callable[..., None]


def client_command(name: str | None = None) -> Callable[[CommandBody], CommandBody]:
    """Register a command that calls the gateway, as `app.command` does.

    The function takes a `CommandSession` first, then its own arguments and options; the
    command adds `--url`, `--api-key` and `--output` to those. Every such command gets its
    client, and reports a client error as a message and an exit code, here and only here.
    """

    def register(body: CommandBody) -> CommandBody:
        _, *own_options = inspect.signature(body, eval_str=True).parameters.values()

        @functools.wraps(body)
        def command(
            *, url: str | None, api_key: str | None, output: OutputFormat, **options: Any
        ) -> None:
            with reported(output), ConveyorClient(url, api_key) as client:
                body(CommandSession(client, output), **options)

        # typer reads the options from the signature: the body's own, then the shared ones.
        signature = inspect.Signature([*own_options, *SHARED_OPTIONS])
        command.__signature__ = signature  # type: ignore[attr-defined]
        return app.command(name)(command)

    return register


JobIdArg = Annotated[uuid.UUID, typer.Argument(help="The job's id.", show_default=False)]


@client_command()
def submit(
    session: CommandSession,
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="ml.train, cmd.run, ...")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="key=value; the value is read as JSON when it is JSON (50, true, "
            '["-n","3"]), else as text. Dotted keys nest: hyperparameters.n_estimators=50.',
        ),
    ] = None,
    params_file: Annotated[
        Path | None,
        typer.Option("--params-file", "-f", help="A JSON object of params; --param overrides."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Submit at most once per key.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow the job with a progress bar until it ends.")
    ] = False,
) -> None:
    """Queue a job. With --wait, follow it to the end; the exit code tells how it ended."""
    params = build_params(param or [], params_file)
    conveyor = session.client
    accepted = conveyor.submit(job_type, params, idempotency_key=idempotency_key)
    if not wait:
        session.show(accepted, _print_accepted)
        return
    if session.json:
        for _ in conveyor.events(accepted.id):
            pass
    else:
        err.print(f"submitted {accepted.type} job {accepted.id}")
        _follow_with_progress(conveyor, accepted.id, accepted.type)
    job = conveyor.get(accepted.id)
    session.show(job, _print_job)
    raise typer.Exit(FINAL_EXIT.get(job.state, ExitCode.OK))


def _print_accepted(accepted: JobAccepted) -> None:
    out.print(f"{accepted.id}  {accepted.type}  {accepted.state}")


def _follow_with_progress(conveyor: ConveyorClient, job_id: uuid.UUID, job_type: str) -> None:
    """A progress bar fed by the job's events; command output lines print above it.

    The job was just submitted, so its whole history is replayed (`Last-Event-ID: 0`):
    without it a job that ended before the stream opened gets only a snapshot, and a fast
    command's output lines were never printed.
    """
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(f"{job_type} queued", total=1.0)
        for event in conveyor.events(job_id, last_event_id=0):
            data = event.data
            if isinstance(data, JobView):
                progress.update(
                    bar, completed=data.progress, description=f"{job_type} {data.state}"
                )
            elif isinstance(data, StateEvent):
                progress.update(bar, description=f"{job_type} {data.state}")
                if data.state is JobState.SUCCEEDED:
                    progress.update(bar, completed=1.0)
            elif isinstance(data, ProgressEvent):
                progress.update(bar, completed=data.progress)
            elif isinstance(data, OutputEvent):
                progress.console.print(
                    escape(data.line), style="dim" if data.stream == "stderr" else ""
                )


def _print_job(job: JobView) -> None:
    out.print(render.job_detail(job))


@client_command()
def get(session: CommandSession, job_id: JobIdArg) -> None:
    """Show one job: state, progress, params, result or error, artifacts."""
    session.show(session.client.get(job_id), _print_job)


@client_command("list")
def list_jobs(
    session: CommandSession,
    job_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Only this job type.")
    ] = None,
    state: Annotated[
        JobState | None, typer.Option("--state", "-s", help="Only this state.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=500, help="Jobs per page.")
    ] = 20,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Continue after a previous page.")
    ] = None,
) -> None:
    """List jobs, newest first."""
    page = session.client.list(job_type=job_type, state=state, limit=limit, cursor=cursor)
    session.show(page, _print_page)


def _print_page(page: JobPage) -> None:
    if not page.items:
        err.print("no jobs")
        return
    out.print(render.jobs_table(page.items))
    if page.next_cursor:
        err.print(f"more: conveyor list --cursor {page.next_cursor}", style="dim", soft_wrap=True)


@client_command()
def cancel(session: CommandSession, job_id: JobIdArg) -> None:
    """Cancel a job: a queued one never starts; a running one is stopped by its worker."""
    try:
        job = session.client.cancel(job_id)
    except Conflict as error:
        if not session.json:
            err.print(f"[bold red]error:[/] {escape(str(error.detail))}")
            raise typer.Exit(ExitCode.REFUSED) from None
        raise
    session.show(job, _print_cancel_outcome)


def _print_cancel_outcome(job: JobView) -> None:
    if job.state is JobState.CANCELLED:
        out.print(f"cancelled job {job.id}")
    else:
        out.print(f"cancel requested: job {job.id} is {job.state}; its worker is stopping it")


@client_command()
def logs(
    session: CommandSession,
    job_id: JobIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream output lines until the job ends.")
    ] = False,
) -> None:
    """A job's output: stdout to stdout, stderr to stderr (cmd.run writes output lines).

    Without --follow, the output a finished job kept in its result. With --follow, every
    line from the job's start, then each new one as the command writes it, state changes
    on stderr, until the job ends; the exit code then tells how it ended.
    """
    if not follow:
        job = session.client.get(job_id)
        if session.json:
            render.echo_json(_kept_output(job))
        else:
            _print_kept_output(job)
        return
    final: JobState | None = None
    # Last-Event-ID 0: the job's whole history first, as `kubectl logs -f` shows it.
    for event in session.client.events(job_id, last_event_id=0):
        final = event.final_state or final
        if session.json:
            render.echo_json_line({"id": event.id, "event": event.kind, "data": event.data})
        else:
            _print_event(event)
    raise typer.Exit(FINAL_EXIT.get(final, ExitCode.OK) if final else ExitCode.OK)


def _kept_output(job: JobView) -> dict[str, Any]:
    result = job.result or {}
    return {
        "id": str(job.id),
        "state": str(job.state),
        "stdout": result.get("stdout"),
        "stderr": result.get("stderr"),
        "error": job.error,
    }


def _print_kept_output(job: JobView) -> None:
    kept = _kept_output(job)
    if kept["stdout"] is None and kept["stderr"] is None:
        if job.state.is_final:
            err.print(f"job {job.id} ({job.type}, {job.state}) kept no output")
        else:
            err.print(f"job {job.id} is {job.state}; follow its output with --follow")
    for stream in ("stdout", "stderr"):
        if kept[stream]:
            typer.echo(kept[stream], nl=False, err=stream == "stderr")
    if job.error:
        err.print(f"[red]{escape(job.error)}[/]")


def _print_event(event: JobEvent) -> None:
    data = event.data
    if isinstance(data, OutputEvent):
        typer.echo(data.line, err=data.stream == "stderr")
    elif isinstance(data, JobView):
        err.print(f"[dim]job {data.id} is {data.state}[/]")
        if data.state.is_final:
            _print_kept_output(data)
    elif isinstance(data, StateEvent):
        note = f": {data.error}" if data.error else ""
        err.print(
            f"[dim]{data.at:%H:%M:%S} {data.state} (attempt {data.attempts}){escape(note)}[/]"
        )


@client_command()
def artifact(
    session: CommandSession,
    job_id: JobIdArg,
    name: Annotated[str, typer.Argument(help="The artifact's name, e.g. model.skops.")],
    file: Annotated[
        Path | None,
        typer.Option("-o", "--file", help="Where to write it ('-': stdout) [default: NAME]."),
    ] = None,
) -> None:
    """Download a file a job produced."""
    if file is not None and str(file) == "-":
        session.client.download_artifact(job_id, name, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    target = file or Path(name)
    size = session.client.download_artifact(job_id, name, target)
    written = {"job_id": str(job_id), "name": name, "path": str(target), "bytes": size}
    session.show(written, _print_written)


def _print_written(written: dict[str, Any]) -> None:
    err.print(f"wrote {escape(written['path'])} ({written['bytes']} bytes)")


@client_command()
def upload(
    session: CommandSession,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The file to send.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Its name in the store [default: FILE's name].")
    ] = None,
) -> None:
    """Upload an input file (CSV, Parquet, JSON Lines); pass the printed path as `source`."""
    session.show(session.client.upload_file(file, name), _print_stored)


def _print_stored(stored: FileStored) -> None:
    typer.echo(stored.path)
    err.print(f"{stored.size} bytes; submit with --param source={escape(stored.path)}", style="dim")


@client_command()
def types(
    session: CommandSession,
    name: Annotated[
        str | None, typer.Argument(help="Show one type's params in full.", show_default=False)
    ] = None,
) -> None:
    """The job types this gateway accepts, with their params."""
    infos = session.client.job_types()
    if name is None:
        session.show(infos, _print_types)
        return
    chosen = [info for info in infos if info.name == name]
    if not chosen:
        known = ", ".join(info.name for info in infos)
        err.print(f"[bold red]error:[/] no job type {escape(repr(name))}; known: {known}")
        raise typer.Exit(ExitCode.NOT_FOUND)
    session.show(chosen[0], _print_type)


def _print_types(infos: list[JobTypeInfo]) -> None:
    out.print(render.types_table(infos))


def _print_type(info: JobTypeInfo) -> None:
    out.print(render.type_detail(info))


@client_command()
def status(
    session: CommandSession,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Also each job type's queue (admin key) and, with a kubeconfig or in-cluster "
            "config, worker replicas and KEDA scalers.",
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Kubernetes namespace [default: the context's]."),
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="kubeconfig context [default: current].")
    ] = None,
) -> None:
    """Is the gateway ready (broker, job store)? With --cluster, queues and workers too."""
    health = session.client.ready()
    queues = session.client.queues() if cluster else []
    view: ClusterView | None = None
    cluster_note = None
    if cluster:
        try:
            view = read_cluster(context=context, namespace=namespace)
        except ClusterUnavailable as error:
            cluster_note = f"worker replicas and autoscalers not shown: {error}"
    if session.json:
        body: dict[str, Any] = {"url": session.client.base_url, "gateway": health}
        if cluster:
            body |= {"queues": queues, "cluster": _cluster_json(view), "cluster_note": cluster_note}
        render.echo_json(body)
    else:
        out.print(render.health_table(session.client.base_url, health))
        if cluster:
            out.print()
            out.print(render.queues_table(queues, view))
        if cluster_note:
            err.print(cluster_note, style="dim")
    if health.status != "ok":
        raise typer.Exit(ExitCode.UNAVAILABLE)


def _cluster_json(view: ClusterView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    return {
        "source": view.source,
        "namespace": view.namespace,
        "workers": [vars(worker) for worker in view.workers.values()],
        "scalers": [vars(scaler) | {"summary": scaler.summary} for scaler in view.scalers.values()],
    }


def main() -> None:
    app()
