"""The `data.transform` job against real polars, real files and a real artifact store."""

from __future__ import annotations

import datetime
import os
import uuid
from typing import Any

import polars as pl
import pytest
from conveyor_core.artifact_paths import UnsafePathError
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs import DATA_TRANSFORM
from conveyor_core.settings import Settings
from conveyor_core.worker import JobCancelled, JobContext, JobFailed
from conveyor_worker_data.job import run

SALES = [
    {"city": "Oslo", "product": "tea", "value": 10, "price": 1.5},
    {"city": "Lima", "product": "tea", "value": 30, "price": 2.0},
    {"city": "Oslo", "product": "coffee", "value": 20, "price": 3.0},
    {"city": "Kyiv", "product": "coffee", "value": None, "price": 2.5},
    {"city": "Lima", "product": "coffee", "value": 40, "price": 1.0},
]


def make_context(root: str, **settings: Any) -> JobContext:
    return JobContext(uuid.uuid4(), Settings(artifact_url=root, **settings), ArtifactStore(root))


@pytest.fixture
def store_root(tmp_path) -> str:
    root = tmp_path / "store"
    root.mkdir()
    return str(root)


@pytest.fixture
def ctx(store_root) -> JobContext:
    return make_context(store_root)


def transform(ctx: JobContext, **params: Any):
    return run(DATA_TRANSFORM.parse_params(params), ctx)


def compute(column: str, left: str | float, operator: str, right: str | float) -> dict[str, Any]:
    return {"op": "compute", "column": column, "left": left, "operator": operator, "right": right}


def where(column: str, cmp: str, value: Any) -> dict[str, Any]:
    return {"op": "filter", "column": column, "cmp": cmp, "value": value}


def write_upload(root: str, name: str, rows: list[dict[str, Any]]) -> str:
    """Write `rows` in the format `name`'s suffix says; return the store-relative path."""
    frame = pl.DataFrame(rows)
    path = os.path.join(root, "uploads", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writers = {".csv": frame.write_csv, ".parquet": frame.write_parquet}
    writers[".jsonl"] = frame.write_ndjson
    writers[os.path.splitext(name)[1]](path)
    return f"uploads/{name}"


# --- the seed case and each step


def test_seed_case_doubles_values_and_keeps_them_integers(ctx):
    result = transform(
        ctx,
        rows=[{"value": 10}, {"value": 20}, {"value": 30}],
        steps=[compute("value", "value", "mul", 2)],
    )
    assert result.rows == [{"value": 20}, {"value": 40}, {"value": 60}]
    assert all(type(row["value"]) is int for row in result.rows)
    assert result.row_count == 3
    assert result.columns == ["value"]
    assert result.artifact is None
    assert result.duration_s >= 0
    assert ctx.progress == 1.0


@pytest.mark.parametrize(
    ("cmp", "value", "cities"),
    [
        ("eq", "Oslo", ["Oslo", "Oslo"]),
        ("ne", "Oslo", ["Lima", "Kyiv", "Lima"]),
        ("gt", 20, ["Lima", "Lima"]),
        ("ge", 20, ["Lima", "Oslo", "Lima"]),
        ("lt", 20, ["Oslo"]),
        ("le", 20, ["Oslo", "Oslo"]),
        ("in", ["Kyiv", "Lima"], ["Lima", "Kyiv", "Lima"]),
    ],
)
def test_filter_compares(ctx, cmp, value, cities):
    column = "city" if isinstance(value, list | str) else "value"
    result = transform(ctx, rows=SALES, steps=[where(column, cmp, value)])
    assert [row["city"] for row in result.rows] == cities


def test_filter_in_numbers_and_null(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            where("value", "in", [10, 40.0, None]),
            {"op": "select", "columns": ["value"]},
        ],
    )
    assert result.rows == [{"value": 10}, {"value": None}, {"value": 40}]


def test_filter_eq_null_means_missing(ctx):
    result = transform(ctx, rows=SALES, steps=[where("value", "eq", None)])
    assert [row["city"] for row in result.rows] == ["Kyiv"]


def test_select_and_rename(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            {"op": "select", "columns": ["value", "city"]},
            {"op": "rename", "mapping": {"city": "town"}},
            {"op": "limit", "n": 2},
        ],
    )
    assert result.columns == ["value", "town"]
    assert result.rows == [{"value": 10, "town": "Oslo"}, {"value": 30, "town": "Lima"}]


@pytest.mark.parametrize(
    ("left", "operator", "right", "expected"),
    [
        ("value", "add", "price", [11.5, 32.0, 23.0, None, 41.0]),
        ("value", "sub", 5, [5, 25, 15, None, 35]),
        (100, "sub", "value", [90, 70, 80, None, 60]),
        ("price", "mul", "price", [2.25, 4.0, 9.0, 6.25, 1.0]),
        ("value", "div", 4, [2.5, 7.5, 5.0, None, 10.0]),
    ],
)
def test_compute(ctx, left, operator, right, expected):
    result = transform(
        ctx,
        rows=SALES,
        steps=[compute("out", left, operator, right)],
    )
    assert result.columns == ["city", "product", "value", "price", "out"]
    assert [row["out"] for row in result.rows] == expected


def test_sort_descending_is_stable_with_nulls_last(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            {"op": "sort", "by": ["product"], "descending": True},
            {"op": "select", "columns": ["city", "product"]},
        ],
    )
    assert [(row["city"], row["product"]) for row in result.rows] == [
        ("Oslo", "tea"),
        ("Lima", "tea"),
        ("Oslo", "coffee"),
        ("Kyiv", "coffee"),
        ("Lima", "coffee"),
    ]
    by_value = transform(ctx, rows=SALES, steps=[{"op": "sort", "by": ["value"]}])
    assert [row["value"] for row in by_value.rows] == [10, 20, 30, 40, None]


def test_limit(ctx):
    result = transform(ctx, rows=SALES, steps=[{"op": "limit", "n": 2}])
    assert result.row_count == 2
    assert [row["city"] for row in result.rows] == ["Oslo", "Lima"]


def test_group_by_with_all_five_aggregations(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            {
                "op": "aggregate",
                "group_by": ["city"],
                "aggregations": [
                    {"column": "value", "func": "sum"},
                    {"column": "value", "func": "mean"},
                    {"column": "price", "func": "min", "alias": "cheapest"},
                    {"column": "price", "func": "max"},
                    {"column": "value", "func": "count"},
                ],
            }
        ],
    )
    assert result.columns == [
        "city",
        "value_sum",
        "value_mean",
        "cheapest",
        "price_max",
        "value_count",
    ]
    # Groups in order of first appearance; count skips the missing value.
    assert result.rows == [
        {"city": "Oslo", "value_sum": 30, "value_mean": 15.0, "cheapest": 1.5,
         "price_max": 3.0, "value_count": 2},
        {"city": "Lima", "value_sum": 70, "value_mean": 35.0, "cheapest": 1.0,
         "price_max": 2.0, "value_count": 2},
        {"city": "Kyiv", "value_sum": 0, "value_mean": None, "cheapest": 2.5,
         "price_max": 2.5, "value_count": 0},
    ]  # fmt: skip


def test_whole_frame_aggregate(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            {
                "op": "aggregate",
                "aggregations": [
                    {"column": "value", "func": "sum", "alias": "total"},
                    {"column": "city", "func": "count"},
                    {"column": "price", "func": "max"},
                ],
            }
        ],
    )
    assert result.rows == [{"total": 100, "city_count": 5, "price_max": 3.0}]
    assert result.row_count == 1


def test_contract_example_runs(ctx):
    result = run(DATA_TRANSFORM.parse_params(DATA_TRANSFORM.example), ctx)
    assert result.rows == [{"city": "Oslo", "double_sum": 40}, {"city": "Lima", "double_sum": 60}]


def test_dates_come_back_as_iso_strings(ctx, store_root):
    path = write_upload(
        store_root, "days.parquet", [{"day": datetime.date(2024, 5, 1), "x": float("nan")}]
    )
    result = transform(ctx, source=path, output="inline")
    assert result.rows == [{"day": "2024-05-01", "x": None}]


# --- file sources


@pytest.mark.parametrize("name", ["sales.csv", "sales.parquet", "sales.jsonl"])
def test_file_sources(ctx, store_root, name):
    path = write_upload(store_root, name, SALES)
    result = transform(
        ctx,
        source=path,
        steps=[
            {"op": "filter", "column": "product", "cmp": "eq", "value": "coffee"},
            compute("total", "value", "mul", "price"),
            {"op": "select", "columns": ["city", "total"]},
            {"op": "sort", "by": ["total"], "descending": True},
        ],
    )
    assert result.columns == ["city", "total"]
    assert result.rows == [
        {"city": "Oslo", "total": 60.0},
        {"city": "Lima", "total": 40.0},
        {"city": "Kyiv", "total": None},
    ]
    assert result.row_count == 3


def test_explicit_format_for_a_file_without_suffix(ctx, store_root):
    write_upload(store_root, "sales.csv", SALES)
    uploads = os.path.join(store_root, "uploads")
    os.rename(os.path.join(uploads, "sales.csv"), os.path.join(uploads, "raw"))
    result = transform(ctx, source="uploads/raw", format="csv", steps=[{"op": "limit", "n": 1}])
    assert result.rows == [{"city": "Oslo", "product": "tea", "value": 10, "price": 1.5}]


# --- failures


def test_unknown_column_in_a_file_source_is_named(ctx, store_root):
    path = write_upload(store_root, "sales.parquet", SALES)
    with pytest.raises(JobFailed, match=r"steps\[1\] \(select\) refers to unknown column 'cty'"):
        transform(
            ctx,
            source=path,
            steps=[{"op": "limit", "n": 1}, {"op": "select", "columns": ["cty"]}],
        )


def test_type_error_names_the_step(ctx, store_root):
    path = write_upload(store_root, "sales.csv", SALES)
    with pytest.raises(JobFailed, match=r"steps\[1\] \(filter\): cannot compare string"):
        transform(
            ctx,
            source=path,
            steps=[
                {"op": "limit", "n": 3},
                where("city", "gt", 5),
            ],
        )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            compute("x", "city", "add", 1),
            r"steps\[0\] \(compute\): arithmetic on dtypes str",
        ),
        (
            {"op": "aggregate", "aggregations": [{"column": "city", "func": "sum"}]},
            r"steps\[0\] \(aggregate\): `sum` operation not supported for dtype `str`",
        ),
        (
            where("city", "in", [1, 2]),
            r"steps\[0\] \(filter\): cannot test column 'city' of type String",
        ),
        (
            {"op": "rename", "mapping": {"city": "value"}},
            r"steps\[0\] \(rename\): column 'value' is duplicate",
        ),
    ],
)
def test_more_type_errors_name_the_step(ctx, step, message):
    with pytest.raises(JobFailed, match=message):
        transform(ctx, rows=SALES, steps=[step])


def test_missing_source_fails(ctx):
    with pytest.raises(JobFailed, match=r"source 'uploads/nope\.csv' not found"):
        transform(ctx, source="uploads/nope.csv")


def test_symlink_leading_outside_the_store_is_refused(ctx, store_root, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("password\nhunter2\n")
    os.makedirs(os.path.join(store_root, "uploads"))
    os.symlink(outside, os.path.join(store_root, "uploads", "link.csv"))
    with pytest.raises((JobFailed, UnsafePathError), match="outside the artifact store"):
        transform(ctx, source="uploads/link.csv")


def test_inline_output_over_the_limit_fails(store_root):
    ctx = make_context(store_root, inline_result_rows=2)
    with pytest.raises(JobFailed, match="more than 2 rows"):
        transform(ctx, rows=SALES, output="inline")


def test_cancel_requested_before_start_stops_the_job(ctx):
    ctx.request_cancel()
    with pytest.raises(JobCancelled):
        transform(ctx, rows=SALES)


# --- artifact output


def read_artifact(ctx: JobContext, name: str) -> pl.DataFrame:
    return pl.read_parquet(ctx.artifacts.url(ctx.artifact_path(name)))


def test_auto_output_switches_to_an_artifact_above_the_inline_limit(store_root):
    ctx = make_context(store_root, inline_result_rows=5)
    rows = [{"n": n} for n in range(8)]
    result = transform(
        ctx,
        rows=rows,
        steps=[compute("square", "n", "mul", "n")],
    )
    assert result.rows is None
    assert result.row_count == 8
    assert result.artifact == "output.parquet"
    assert ctx.produced_artifacts == ["output.parquet"]
    assert read_artifact(ctx, result.artifact).to_dicts() == [
        {"n": n, "square": n * n} for n in range(8)
    ]
    small = transform(make_context(store_root, inline_result_rows=5), rows=rows[:5])
    assert small.rows == rows[:5]
    assert small.artifact is None


def test_auto_output_from_a_file_source(store_root):
    ctx = make_context(store_root, inline_result_rows=5)
    path = write_upload(store_root, "numbers.parquet", [{"n": n} for n in range(20)])
    big = transform(ctx, source=path, steps=[where("n", "ge", 4)])
    assert big.rows is None
    assert big.row_count == 16
    assert read_artifact(ctx, big.artifact)["n"].to_list() == list(range(4, 20))
    # Small outputs from a file are inlined; the Parquet written on the way stays listed.
    small = transform(
        make_context(store_root, inline_result_rows=5),
        source=path,
        steps=[where("n", "lt", 2)],
    )
    assert small.rows == [{"n": 0}, {"n": 1}]
    assert small.artifact is not None


def test_artifact_output(ctx):
    result = transform(
        ctx,
        rows=SALES,
        steps=[
            {
                "op": "aggregate",
                "group_by": ["product"],
                "aggregations": [{"column": "value", "func": "sum"}],
            },
        ],
        output="artifact",
    )
    assert result.rows is None
    assert result.row_count == 2
    assert result.columns == ["product", "value_sum"]
    assert read_artifact(ctx, result.artifact).to_dicts() == [
        {"product": "tea", "value_sum": 40},
        {"product": "coffee", "value_sum": 60},
    ]
