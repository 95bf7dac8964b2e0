"""`data.transform`: run a declarative pipeline over inline rows or a file in the artifact store.

Reads lazily (inline rows, or a CSV / Parquet / JSON Lines scan), checks columns and types
before touching the data, then runs the plan on polars' streaming engine. Small outputs
come back inline; large ones are streamed to the job's `output.parquet` artifact, so memory
stays bounded however big the input is.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl
from conveyor_core.artifact_paths import UnsafePathError
from conveyor_core.jobs.data import Scalar, TransformParams, TransformResult, columns_after
from conveyor_core.worker import JobContext, JobFailed

from conveyor_worker_data.pipeline import build_plan, first_line

OUTPUT_ARTIFACT = "output.parquet"
# Rows read to guess CSV / JSON Lines column types; polars' default of 100 misreads files
# whose first rows are not typical (an integer column that turns decimal further down).
SCHEMA_INFERENCE_ROWS = 10_000
# Waiting for a query: polls start at 0.1 ms (a small query is done in well under 1 ms)
# and back off to 10 ms, so a long query costs ~100 wake-ups a second at most.
_FIRST_POLL_INTERVAL_S = 0.0001
_MAX_POLL_INTERVAL_S = 0.01

_FORMAT_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def run(params: TransformParams, ctx: JobContext) -> TransformResult:
    """The `data.transform` job: read, check, plan, execute, deliver inline or as Parquet."""
    started = time.monotonic()
    ctx.report_progress(0.05)
    source, schema = _open_source(params, ctx)
    try:
        columns_after(schema.names(), params.steps)
    except ValueError as error:  # an unknown column, named by the contract's message
        raise JobFailed(str(error)) from error
    plan, output_schema = build_plan(source, schema, params.steps)
    ctx.report_progress(0.1)
    output = _deliver(plan, params, ctx)
    ctx.report_progress(1.0)
    return TransformResult(
        row_count=output.row_count,
        columns=output_schema.names(),
        rows=output.rows,
        artifact=output.artifact,
        duration_s=round(time.monotonic() - started, 3),
    )


def warm_up() -> None:
    """Run a three-row query once in a new pool process: polars starts its thread pool and
    streaming engine here, not in the process's first job (tens of ms). Not in the
    worker's main process: polars' threads must not exist before a fork."""
    running = (
        pl.LazyFrame({"value": [1, 2, 3]})
        .filter(pl.col("value") > 1)
        .collect(engine="streaming", background=True)  # the way `_execute` runs a job
    )
    while running.fetch() is None:
        time.sleep(_FIRST_POLL_INTERVAL_S)


# --- input


def _open_source(params: TransformParams, ctx: JobContext) -> tuple[pl.LazyFrame, pl.Schema]:
    """The input as a lazy frame, with its schema (for files: read from the file's head)."""
    if params.rows is not None:
        frame = _frame_from_rows(params.rows)
        return frame.lazy(), frame.schema
    assert params.source is not None  # the contract requires exactly one of rows / source
    scan = _scan_source(params.source, params.format, ctx)
    try:
        return scan, scan.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise JobFailed(f"cannot read source {params.source!r}: {first_line(error)}") from error


def _frame_from_rows(rows: list[dict[str, Scalar]]) -> pl.DataFrame:
    try:
        # Look at every row for types: a column whose first value is 1 and a later one 2.5
        # is a float column.
        return pl.DataFrame(rows, infer_schema_length=None)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as error:
        raise JobFailed(f"cannot build a table from `rows`: {first_line(error)}") from error


def _scan_source(path: str, format_: str | None, ctx: JobContext) -> pl.LazyFrame:
    try:
        url = ctx.artifacts.url(path)  # refuses `..`, absolute paths, symlinks leaving the store
        exists = ctx.artifacts.exists(path)
    except UnsafePathError as error:
        raise JobFailed(f"source {path!r} refused: {error}") from error
    if not exists:
        raise JobFailed(f"source {path!r} not found in the artifact store")
    fmt = format_ or _format_from_suffix(path)
    return _SCANNERS[fmt](url, ctx.artifacts.storage_options or None)


def _format_from_suffix(path: str) -> str:
    for suffix, fmt in _FORMAT_BY_SUFFIX.items():
        if path.endswith(suffix):
            return fmt
    raise JobFailed(f"cannot tell the format of {path!r}; give `format`")


# `glob=False` and no hive partitioning: a source names exactly one file, taken literally.
def _scan_csv(url: str, options: dict[str, Any] | None) -> pl.LazyFrame:
    return pl.scan_csv(
        url, storage_options=options, infer_schema_length=SCHEMA_INFERENCE_ROWS, glob=False
    )


def _scan_parquet(url: str, options: dict[str, Any] | None) -> pl.LazyFrame:
    return pl.scan_parquet(url, storage_options=options, glob=False, hive_partitioning=False)


def _scan_jsonl(url: str, options: dict[str, Any] | None) -> pl.LazyFrame:
    return pl.scan_ndjson(url, storage_options=options, infer_schema_length=SCHEMA_INFERENCE_ROWS)


_SCANNERS: dict[str, Callable[[str, dict[str, Any] | None], pl.LazyFrame]] = {
    "csv": _scan_csv,
    "parquet": _scan_parquet,
    "jsonl": _scan_jsonl,
}


# --- execution


def _execute(query: pl.LazyFrame, ctx: JobContext) -> pl.DataFrame:
    """Run `query` on the streaming engine, waiting for it in Python rather than native code.

    Waiting in Python lets Celery's soft time limit land, and a cancel is passed on to
    polars, which stops where it can (best effort: some operations run to the end). If it
    does not stop, the runtime kills the process after the cancel grace period.
    """
    running = query.collect(engine="streaming", background=True)
    undo = ctx.on_cancel(running.cancel)
    delay = _FIRST_POLL_INTERVAL_S
    try:
        while (frame := running.fetch()) is None:
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_INTERVAL_S)  # quick queries return quickly
    except pl.exceptions.PolarsError as error:
        ctx.check_cancelled()  # a cancelled query fails with "query interrupted"
        raise JobFailed(f"transform failed: {first_line(error)}") from error
    except BaseException:
        running.cancel()  # a time limit: don't leave the query computing
        raise
    finally:
        undo()
    return frame


# --- output


@dataclass
class _Output:
    row_count: int
    rows: list[dict[str, Any]] | None = None
    artifact: str | None = None


def _deliver(plan: pl.LazyFrame, params: TransformParams, ctx: JobContext) -> _Output:
    limit = ctx.settings.inline_result_rows
    if params.output == "inline":
        return _inline(plan, limit, ctx)
    if params.output == "auto" and params.rows is not None:
        # Inline input is small (capped by max_inline_rows) and no step adds rows.
        return _inline_or_artifact(plan, limit, ctx)
    # A file can be any size: stream it to Parquet, then inline it too if it is small.
    inline_up_to = limit if params.output == "auto" else -1
    return _artifact(plan, inline_up_to, ctx)


def _inline(plan: pl.LazyFrame, limit: int, ctx: JobContext) -> _Output:
    # One row past the limit is enough to know it is exceeded, without computing the rest.
    frame = _execute(plan.head(limit + 1), ctx)
    ctx.report_progress(0.9)
    if frame.height > limit:
        raise JobFailed(
            f"the output has more than {limit} rows, the most returned inline "
            "(CONVEYOR_INLINE_RESULT_ROWS); ask for output 'artifact' or 'auto'"
        )
    return _Output(frame.height, rows=_json_rows(frame))


def _inline_or_artifact(plan: pl.LazyFrame, limit: int, ctx: JobContext) -> _Output:
    frame = _execute(plan, ctx)
    ctx.report_progress(0.9)
    if frame.height <= limit:
        return _Output(frame.height, rows=_json_rows(frame))
    return _Output(frame.height, artifact=_write_parquet(frame.lazy(), ctx))


def _artifact(plan: pl.LazyFrame, inline_up_to: int, ctx: JobContext) -> _Output:
    artifact = _write_parquet(plan, ctx)
    ctx.report_progress(0.9)
    url = ctx.artifacts.url(ctx.artifact_path(artifact))
    options = ctx.artifacts.storage_options or None
    # The row count is in the Parquet footer: no need to read the data back.
    row_count = int(_scan_parquet(url, options).select(pl.len()).collect().item())
    if row_count > inline_up_to:
        return _Output(row_count, artifact=artifact)
    rows = _json_rows(pl.read_parquet(url, storage_options=options))
    return _Output(row_count, rows=rows, artifact=artifact)


def _write_parquet(frame: pl.LazyFrame, ctx: JobContext) -> str:
    """Stream `frame` into this job's output artifact; return the artifact's name."""
    url = ctx.artifact_url(OUTPUT_ARTIFACT)
    sink = frame.sink_parquet(url, lazy=True, storage_options=ctx.artifacts.storage_options or None)
    _execute(sink, ctx)
    return OUTPUT_ARTIFACT


def _json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: dates as ISO strings, NaN as null, decimals as strings."""
    return [
        {name: _json_value(value) for name, value in row.items()}
        for row in frame.iter_rows(named=True)
    ]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return str(value)  # exact, where a float would round
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value
