"""Turn the declarative steps of `data.transform` into a lazy polars plan.

Every step maps to a small function building polars expressions; nothing is evaluated
from strings and no caller code runs. `build_plan` also runs each step over an empty
frame of the input's schema, so a type error (a string compared with a number, a sum of
text) fails before any data is read, with a message naming the step.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
from conveyor_core.jobs.data import (
    AggregateStep,
    ComputeStep,
    FilterStep,
    LimitStep,
    RenameStep,
    Scalar,
    SelectStep,
    SortStep,
)
from conveyor_core.worker import JobFailed

_COMPARISONS: dict[str, Callable[[pl.Expr, Any], pl.Expr]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}

_ARITHMETIC: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}

_AGGREGATIONS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "sum": pl.Expr.sum,
    "mean": pl.Expr.mean,
    "min": pl.Expr.min,
    "max": pl.Expr.max,
    "count": pl.Expr.count,  # non-null values, like SQL's COUNT(column)
}


class StepError(ValueError):
    """A step that cannot apply to the data it receives; `build_plan` adds which step."""


def first_line(error: BaseException) -> str:
    """The useful part of a polars error; the rest is a dump of the query plan."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- filter


def _filter(frame: pl.LazyFrame, step: FilterStep, schema: pl.Schema) -> pl.LazyFrame:
    column = pl.col(step.column)
    if isinstance(step.value, list):
        return frame.filter(_is_in(step.column, schema[step.column], step.value))
    if step.value is None:
        # `== null` is null for every row in polars; callers mean "is missing".
        if step.cmp == "eq":
            return frame.filter(column.is_null())
        if step.cmp == "ne":
            return frame.filter(column.is_not_null())
        raise StepError(f"cannot compare with null using {step.cmp!r}; use eq or ne")
    return frame.filter(_COMPARISONS[step.cmp](column, step.value))


def _is_in(name: str, dtype: pl.DataType, values: list[Scalar]) -> pl.Expr:
    """Membership test; polars 2 wants both sides of `is_in` of one type, so pick it here."""
    wanted = [value for value in values if value is not None]
    matches = _membership(name, dtype, wanted) if wanted else pl.lit(False)
    if len(wanted) < len(values):  # a None in the list matches missing values
        matches = matches | pl.col(name).is_null()
    return matches


def _membership(name: str, dtype: pl.DataType, values: Sequence[Scalar]) -> pl.Expr:
    target = _membership_dtype(name, dtype, values)
    # Not strict: a value that does not fit the common type (say a huge UInt64) cannot match.
    column = pl.col(name).cast(target, strict=False)
    return column.is_in(pl.Series(values, dtype=target).implode())


def _membership_dtype(name: str, dtype: pl.DataType, values: Sequence[Scalar]) -> pl.DataType:
    kinds = {_kind(value) for value in values}
    if dtype == pl.Null:  # an all-null column: let the values decide
        return pl.Series(values, strict=False).dtype
    if dtype.is_numeric() and kinds <= {"int", "float"}:
        return pl.Float64() if dtype.is_float() or "float" in kinds else pl.Int64()
    if dtype == pl.String and kinds == {"str"}:
        return pl.String()
    if dtype == pl.Boolean and kinds == {"bool"}:
        return pl.Boolean()
    raise StepError(
        f"cannot test column {name!r} of type {dtype} for membership in "
        f"values of type {', '.join(sorted(kinds))}"
    )


def _kind(value: Scalar) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


# --- the other steps


def _select(frame: pl.LazyFrame, step: SelectStep, schema: pl.Schema) -> pl.LazyFrame:
    return frame.select([pl.col(name) for name in step.columns])


def _rename(frame: pl.LazyFrame, step: RenameStep, schema: pl.Schema) -> pl.LazyFrame:
    return frame.rename(step.mapping)


def _compute(frame: pl.LazyFrame, step: ComputeStep, schema: pl.Schema) -> pl.LazyFrame:
    expr = _ARITHMETIC[step.operator](_operand(step.left), _operand(step.right))
    return frame.with_columns(expr.alias(step.column))


def _operand(operand: str | int | float) -> pl.Expr:
    """A string names a column; a number is a literal (ints stay ints: 10 * 2 is 20, not 20.0)."""
    return pl.col(operand) if isinstance(operand, str) else pl.lit(operand)


def _sort(frame: pl.LazyFrame, step: SortStep, schema: pl.Schema) -> pl.LazyFrame:
    # A stable sort, so ties keep their input order and results are repeatable.
    return frame.sort(step.by, descending=step.descending, nulls_last=True, maintain_order=True)


def _aggregate(frame: pl.LazyFrame, step: AggregateStep, schema: pl.Schema) -> pl.LazyFrame:
    exprs = [
        _AGGREGATIONS[aggregation.func](pl.col(aggregation.column)).alias(aggregation.output_name)
        for aggregation in step.aggregations
    ]
    if not step.group_by:
        return frame.select(exprs)
    # Groups come out in order of first appearance, the same on every run.
    return frame.group_by(step.group_by, maintain_order=True).agg(exprs)


def _limit(frame: pl.LazyFrame, step: LimitStep, schema: pl.Schema) -> pl.LazyFrame:
    return frame.head(step.n)


_STEPS: dict[str, Callable[[pl.LazyFrame, Any, pl.Schema], pl.LazyFrame]] = {
    "filter": _filter,
    "select": _select,
    "rename": _rename,
    "compute": _compute,
    "sort": _sort,
    "aggregate": _aggregate,
    "limit": _limit,
}


def build_plan(
    source: pl.LazyFrame, schema: pl.Schema, steps: list[Any]
) -> tuple[pl.LazyFrame, pl.Schema]:
    """Apply `steps` to `source` lazily; return the plan and the schema it will produce.

    `schema` is the source's schema. Each step is also run over an empty frame of the
    schema it receives: polars checks types only when a query executes, and executing on
    no rows costs nothing while telling exactly which step is wrong (raised as JobFailed).
    """
    plan = source
    probe = pl.DataFrame(schema=schema)
    for index, step in enumerate(steps):
        apply = _STEPS[step.op]
        try:
            plan = apply(plan, step, probe.schema)
            probe = apply(probe.lazy(), step, probe.schema).collect()
        except (pl.exceptions.PolarsError, TypeError, ValueError) as error:
            raise JobFailed(f"steps[{index}] ({step.op}): {first_line(error)}") from error
    return plan, probe.schema
