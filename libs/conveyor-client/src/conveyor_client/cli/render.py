"""How results look: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import typer
from conveyor_core.api_models import Health, JobTypeInfo, JobView, QueueStatus
from conveyor_core.states import JobState
from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from conveyor_client.cli.cluster import ClusterView
from conveyor_client.cli.params_schema import describe_params, param_names

STATE_STYLES = {
    JobState.QUEUED: "yellow",
    JobState.RUNNING: "cyan",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
}


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    return value


def echo_json(value: Any, *, err: bool = False) -> None:
    """Plain JSON on stdout (no colours, no wrapping), for `--output json`."""
    typer.echo(json.dumps(to_jsonable(value), indent=2, default=str), err=err)


def echo_json_line(value: Any) -> None:
    """One compact JSON document per line (JSON Lines), for streams of events."""
    typer.echo(json.dumps(to_jsonable(value), separators=(",", ":"), default=str))


def state_text(state: JobState) -> Text:
    return Text(str(state), style=STATE_STYLES.get(state, ""))


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _duration(job: JobView) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or datetime.now(job.started_at.tzinfo)
    seconds = (end - job.started_at).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def jobs_table(jobs: Iterable[JobView]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "TYPE", "STATE", "PROGRESS", "CREATED", "DURATION", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR", overflow="fold")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.type,
            state_text(job.state),
            f"{job.progress:.0%}",
            _when(job.created_at),
            _duration(job),
            Text((job.error or "")[:80]),
        )
    return table


def job_detail(job: JobView) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("id", str(job.id))
    grid.add_row("type", job.type)
    state = state_text(job.state)
    if job.cancel_requested and not job.state.is_final:
        state.append(" (cancel requested)")
    grid.add_row("state", state)
    grid.add_row("progress", f"{job.progress:.0%}")
    grid.add_row("attempts", str(job.attempts))
    grid.add_row("created", _when(job.created_at))
    grid.add_row("started", _when(job.started_at))
    grid.add_row("finished", _when(job.finished_at))
    grid.add_row("duration", _duration(job))
    grid.add_row("params", Text(json.dumps(job.params), overflow="fold"))
    if job.error:
        grid.add_row("error", Text(job.error, style="red"))
    if job.result is not None:
        grid.add_row("result", JSON.from_data(job.result))
    if job.artifacts:
        grid.add_row("artifacts", ", ".join(job.artifacts))
    return grid


def types_table(types: Iterable[JobTypeInfo]) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("TYPE", no_wrap=True)
    table.add_column("QUEUE", no_wrap=True)
    table.add_column("PARAMS (* required)", overflow="fold")
    table.add_column("SUMMARY", overflow="fold")
    for info in types:
        params = ", ".join(param_names(info.params_schema))
        table.add_row(info.name, info.queue, Text(params), Text(info.summary))
    return table


def type_detail(info: JobTypeInfo) -> RenderableType:
    parts: list[RenderableType] = [
        Text.assemble((info.name, "bold"), f"  (queue {info.queue})"),
        Text(info.summary),
    ]
    for variant in describe_params(info.params_schema):
        table = Table(box=None, header_style="bold", title=variant.label or None)
        for column in ("PARAM", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"):
            table.add_column(column, overflow="fold")
        for param in variant.params:
            cells = (param.name, param.type, "yes" if param.required else "", param.default)
            # Text, not markup: `list[str]` is not a style tag.
            table.add_row(*(Text(cell) for cell in (*cells, param.description)))
        parts += [Text(""), table]
    commands = info.policy.get("commands")
    if commands:
        table = Table(box=None, header_style="bold", title="commands this gateway allows")
        for column in ("COMMAND", "MAX ARGS", "ARGUMENTS", "DESCRIPTION"):
            table.add_column(column, overflow="fold")
        for name, command in commands.items():
            cells = (name, str(command["max_args"]), command["arguments"], command["description"])
            table.add_row(*(Text(cell) for cell in cells))
        parts += [Text(""), table]
    parts += [Text(""), Text("example params:", style="bold"), JSON.from_data(info.example)]
    return Group(*parts)


def health_table(url: str, health: Health) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("CHECK")
    table.add_column("STATUS")
    ready = Text(health.status, style="green" if health.status == "ok" else "red")
    table.add_row("gateway", Text.assemble(ready, f"  {url}"))
    for name, status in health.checks.items():
        table.add_row(name, Text(status, style="green" if status == "ok" else "red"))
    return table


def _count(value: int | None) -> str:
    return "missing" if value is None else str(value)


def queues_table(queues: list[QueueStatus], cluster: ClusterView | None) -> Table:
    title = "queues" if cluster is None else f"queues and workers ({cluster.source}, "
    if cluster is not None:
        title += f"namespace {cluster.namespace})"
    table = Table(box=None, header_style="bold", title=title)
    for column in ("JOB TYPE", "QUEUE", "WAITING", "CONSUMERS", "DEAD LETTERS"):
        table.add_column(column, no_wrap=True)
    if cluster is not None:
        table.add_column("WORKERS ready/desired", no_wrap=True)
        table.add_column("AUTOSCALER")
    for queue in queues:
        row: list[RenderableType] = [
            queue.job_type,
            queue.queue,
            _count(queue.messages),
            _count(queue.consumers),
            Text(
                _count(queue.dead_letter_messages),
                style="red" if queue.dead_letter_messages else "",
            ),
        ]
        if cluster is not None:
            worker = cluster.workers.get(queue.queue)
            row.append(f"{worker.ready}/{worker.desired} ({worker.deployment})" if worker else "-")
            scaler = cluster.scalers.get(queue.queue)
            if scaler is None:
                row.append("-")
            else:
                bounds = f"{scaler.min_replicas}..{scaler.max_replicas}"
                style = "green" if scaler.ready == "True" else "red"
                row.append(Text(f"{scaler.kind} {scaler.name}: {scaler.summary}, {bounds}", style))
        table.add_row(*row)
    return table
