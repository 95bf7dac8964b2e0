"""`data.transform`: a declarative pipeline of steps over rows; no eval, no user code."""

from __future__ import annotations

from itertools import islice
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from conveyor_core.artifact_paths import ArtifactPath
from conveyor_core.jobs.base import JobType, LimitExceeded, StrictModel
from conveyor_core.settings import Settings

Scalar = str | int | float | bool | None
ColumnName = Annotated[str, Field(min_length=1, max_length=128)]
# Bounds on what the gateway validates per request, so its cost stays small and linear.
MAX_COLUMNS = 1_000  # distinct columns over all inline rows
MAX_PIPELINE_SIZE = 10_000  # names and values over all steps (_step_size)
MAX_IN_VALUES = 10_000  # values of one `in` filter


class FilterStep(StrictModel):
    op: Literal["filter"]
    column: ColumnName
    cmp: Literal["eq", "ne", "gt", "ge", "lt", "le", "in"]
    value: Scalar | Annotated[list[Scalar], Field(max_length=MAX_IN_VALUES)] = Field(
        description="A scalar, or a list for `in`."
    )

    @model_validator(mode="after")
    def _list_only_for_in(self) -> FilterStep:
        if (self.cmp == "in") != isinstance(self.value, list):
            raise ValueError("`value` must be a list exactly when cmp is 'in'")
        return self


class SelectStep(StrictModel):
    op: Literal["select"]
    columns: list[ColumnName] = Field(min_length=1, max_length=1_000)


class RenameStep(StrictModel):
    op: Literal["rename"]
    mapping: dict[ColumnName, ColumnName] = Field(min_length=1, max_length=1_000)


class ComputeStep(StrictModel):
    op: Literal["compute"]
    column: ColumnName = Field(description="Column to create or overwrite.")
    left: ColumnName | int | float = Field(description="A column name or a number.")
    operator: Literal["add", "sub", "mul", "div"]
    right: ColumnName | int | float = Field(description="A column name or a number.")


class SortStep(StrictModel):
    op: Literal["sort"]
    by: list[ColumnName] = Field(min_length=1, max_length=32)
    descending: bool = False


class Aggregation(StrictModel):
    column: ColumnName
    func: Literal["sum", "mean", "min", "max", "count"]
    alias: ColumnName | None = Field(default=None, description="Output name; `<column>_<func>`.")

    @property
    def output_name(self) -> str:
        return self.alias or f"{self.column}_{self.func}"


class AggregateStep(StrictModel):
    op: Literal["aggregate"]
    group_by: list[ColumnName] = Field(default_factory=list, max_length=32)
    aggregations: list[Aggregation] = Field(min_length=1, max_length=100)


class LimitStep(StrictModel):
    op: Literal["limit"]
    n: int = Field(ge=0, le=100_000_000)


Step = Annotated[
    FilterStep | SelectStep | RenameStep | ComputeStep | SortStep | AggregateStep | LimitStep,
    Field(discriminator="op"),
]


def columns_after(columns: list[str], steps: list[Any]) -> list[str]:
    """Walk the pipeline over known input columns; raise naming the first unknown column.

    Used at the gateway for inline rows, so a typo fails before anything is queued, and by
    the worker for file sources once it has read the file's schema. Linear in the names
    the steps hold plus the columns at each step: the columns are a dict, not a list.
    """
    current = dict.fromkeys(columns)

    def need(step_index: int, name: str) -> None:
        if name not in current:
            raise ValueError(
                f"steps[{step_index}] ({steps[step_index].op}) refers to unknown column "
                f"{name!r}; columns at that point: {_some(current)}"
            )

    for index, step in enumerate(steps):
        if isinstance(step, FilterStep):
            need(index, step.column)
        elif isinstance(step, SelectStep):
            for name in step.columns:
                need(index, name)
            current = dict.fromkeys(step.columns)
        elif isinstance(step, RenameStep):
            for old in step.mapping:
                need(index, old)
            current = dict.fromkeys(step.mapping.get(name, name) for name in current)
        elif isinstance(step, ComputeStep):
            for operand in (step.left, step.right):
                if isinstance(operand, str):
                    need(index, operand)
            current[step.column] = None
        elif isinstance(step, SortStep):
            for name in step.by:
                need(index, name)
        elif isinstance(step, AggregateStep):
            for name in step.group_by:
                need(index, name)
            for aggregation in step.aggregations:
                need(index, aggregation.column)
            current = dict.fromkeys([*step.group_by, *(a.output_name for a in step.aggregations)])
    return list(current)


def _some(names: dict[str, None], shown: int = 20) -> str:
    # An error message names a few columns, not ten thousand of them.
    listed = list(islice(names, shown))
    more = len(names) - len(listed)
    return f"{listed}" + (f" and {more} more" if more > 0 else "")


def _step_size(step: Any) -> int:
    """How many names and values a step holds: what validating it costs."""
    if isinstance(step, FilterStep):
        return 1 + (len(step.value) if isinstance(step.value, list) else 1)
    if isinstance(step, SelectStep):
        return len(step.columns)
    if isinstance(step, RenameStep):
        return 2 * len(step.mapping)
    if isinstance(step, SortStep):
        return len(step.by)
    if isinstance(step, AggregateStep):
        return len(step.group_by) + 2 * len(step.aggregations)
    return 3  # compute: a column and two operands; limit: one number


class TransformParams(StrictModel):
    rows: list[Annotated[dict[ColumnName, Scalar], Field(max_length=MAX_COLUMNS)]] | None = Field(
        default=None,
        max_length=10_000,
        description="Inline input rows (capped by CONVEYOR_MAX_INLINE_ROWS).",
    )
    source: ArtifactPath | None = Field(
        default=None, description="CSV, Parquet or JSON Lines file in the artifact store."
    )
    format: Literal["csv", "parquet", "jsonl"] | None = Field(
        default=None, description="Format of `source`; taken from its extension when omitted."
    )
    steps: list[Step] = Field(default_factory=list, max_length=64)
    output: Literal["auto", "inline", "artifact"] = Field(
        default="auto",
        description="`auto`: for inline `rows`, the output inline when it is small, else a "
        "Parquet artifact; for a file `source`, always the Parquet artifact (a file can be any "
        "size, so it is streamed there), plus the rows inline when they are few. `inline` "
        "fails the job past CONVEYOR_INLINE_RESULT_ROWS; `artifact` never inlines.",
    )

    @model_validator(mode="after")
    def _one_input_and_known_columns(self) -> TransformParams:
        if (self.rows is None) == (self.source is None):
            raise ValueError("give exactly one of `rows` (inline) or `source` (artifact path)")
        if (
            self.source is not None
            and self.format is None
            and not self.source.endswith((".csv", ".parquet", ".jsonl", ".ndjson"))
        ):
            raise ValueError("`format` is needed when `source` has no .csv/.parquet/.jsonl suffix")
        size = sum(_step_size(step) for step in self.steps)
        if size > MAX_PIPELINE_SIZE:
            raise ValueError(
                f"the steps hold {size} column names and values; the limit is {MAX_PIPELINE_SIZE}"
            )
        if self.rows:
            seen: dict[str, None] = {}
            for row in self.rows:
                seen.update(dict.fromkeys(row))
                if len(seen) > MAX_COLUMNS:
                    raise ValueError(f"the rows name more than {MAX_COLUMNS} distinct columns")
            columns_after(list(seen), self.steps)
        return self


class TransformResult(BaseModel):
    row_count: int
    columns: list[str]
    rows: list[dict[str, Any]] | None = Field(
        default=None, description="The output rows, when small enough to inline."
    )
    artifact: str | None = Field(default=None, description="Parquet artifact with the output.")
    duration_s: float


def admit_transform(params: TransformParams, settings: Settings) -> None:
    if params.rows is not None and len(params.rows) > settings.max_inline_rows:
        raise LimitExceeded(
            f"params.rows has {len(params.rows)} rows; the limit is {settings.max_inline_rows} "
            "(put larger inputs in the artifact store and pass `source`)"
        )


DATA_TRANSFORM = JobType(
    name="data.transform",
    worker="data",
    params=TransformParams,
    result=TransformResult,
    summary="Run a declarative filter/select/compute/aggregate pipeline with polars.",
    example={
        "rows": [
            {"city": "Oslo", "value": 10},
            {"city": "Oslo", "value": 20},
            {"city": "Lima", "value": 30},
        ],
        "steps": [
            {"op": "filter", "column": "value", "cmp": "ge", "value": 15},
            {"op": "compute", "column": "double", "left": "value", "operator": "mul", "right": 2},
            {
                "op": "aggregate",
                "group_by": ["city"],
                "aggregations": [{"column": "double", "func": "sum"}],
            },
        ],
    },
    soft_time_limit_s=2 * 3600,
    time_limit_s=2 * 3600 + 120,
    admit=admit_transform,
    input_artifacts=("source",),
)
