"""Data transform, one case per process (so peak RSS is that case's alone).

    python -m bench.transform make DIR ROWS                   # write DIR/rows-ROWS.parquet
    python -m bench.transform conveyor DIR ROWS [--repeat N]  # the data worker's job code
    python -m bench.transform loop DIR ROWS [--batch N] [--repeat N]  # dicts, a Python loop

The computation: keep rows with value >= 50, total = value * qty, then per city the sum
of total and the row count. Prints one JSON line: seconds, peak RSS, the result's digest.
With `--repeat N`, the case runs N times in its process and `seconds` is their median
(`runs` has each one): a case of tens of milliseconds is otherwise one noisy sample.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

CITIES = [f"city{i:02d}" for i in range(50)]
STEPS: list[dict[str, Any]] = [
    {"op": "filter", "column": "value", "cmp": "ge", "value": 50.0},
    {"op": "compute", "column": "total", "left": "value", "operator": "mul", "right": "qty"},
    {
        "op": "aggregate",
        "group_by": ["city"],
        "aggregations": [
            {"column": "total", "func": "sum"},
            {"column": "total", "func": "count", "alias": "n"},
        ],
    },
]


def source_name(rows: int) -> str:
    return f"rows-{rows}.parquet"


def make(directory: Path, rows: int) -> dict[str, Any]:
    import numpy as np
    import polars as pl

    path = directory / source_name(rows)
    if not path.exists():
        rng = np.random.default_rng(7)
        pl.DataFrame(
            {
                "id": np.arange(rows, dtype=np.int64),
                "city": pl.Series(CITIES).gather(rng.integers(0, len(CITIES), rows)),
                "value": rng.uniform(0, 100, rows).round(2),
                "qty": rng.integers(1, 10, rows, dtype=np.int64),
            }
        ).write_parquet(path, row_group_size=256_000)
    return {"path": str(path), "bytes": path.stat().st_size}


def conveyor(directory: Path, rows: int) -> dict[str, Any]:
    from conveyor_core.artifacts import ArtifactStore
    from conveyor_core.jobs.data import TransformParams
    from conveyor_core.settings import Settings
    from conveyor_core.worker.context import JobContext
    from conveyor_worker_data.job import run

    params = TransformParams.model_validate({"source": source_name(rows), "steps": STEPS})
    ctx = JobContext(uuid.uuid4(), Settings(), ArtifactStore(str(directory)))
    started = time.perf_counter()
    result = run(params, ctx)
    seconds = time.perf_counter() - started
    groups = {row["city"]: (row["total_sum"], row["n"]) for row in result.rows or []}
    return {"seconds": seconds, "groups": len(groups), "digest": _digest(groups)}


def loop(directory: Path, rows: int, batch: int) -> dict[str, Any]:
    """The list-of-dicts loop, from the same Parquet file to the same result.

    `seconds` counts reading the file into dicts and the loop (what Conveyor's time counts
    too: the file in, the groups out); `loop_seconds` is the loop alone, as if the dicts
    had arrived for free. With `batch` smaller than `rows`, dicts are built and looped
    over one batch at a time, which spares the baseline from holding all rows at once.
    """
    import polars as pl

    frame = pl.scan_parquet(directory / source_name(rows))
    groups: dict[str, list[float]] = {}
    seconds = loop_seconds = 0.0
    for offset in range(0, rows, batch):
        started = time.perf_counter()
        records = frame.slice(offset, batch).collect().to_dicts()
        looping = time.perf_counter()
        for row in records:
            if row["value"] >= 50.0:
                total = row["value"] * row["qty"]
                group = groups.setdefault(row["city"], [0.0, 0])
                group[0] += total
                group[1] += 1
        done = time.perf_counter()
        seconds += done - started
        loop_seconds += done - looping
        del records
    result = {city: (total, int(n)) for city, (total, n) in groups.items()}
    return {
        "seconds": seconds,
        "loop_seconds": loop_seconds,
        "groups": len(result),
        "digest": _digest(result),
    }


def _digest(groups: dict[str, tuple[float, int]]) -> str:
    """Order-free summary to check both ways computed the same thing."""
    total = sum(v[0] for v in groups.values())
    count = sum(v[1] for v in groups.values())
    return f"{count}:{total:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make", "conveyor", "loop"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("rows", type=int)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "make":
        out = make(args.directory, args.rows)
    else:
        runs = [
            conveyor(args.directory, args.rows)
            if args.mode == "conveyor"
            else loop(args.directory, args.rows, args.batch or args.rows)
            for _ in range(args.repeat)
        ]
        if len({run["digest"] for run in runs}) != 1:
            raise SystemExit(f"repeated runs disagree: {runs}")
        out = {**runs[0], "seconds": statistics.median(run["seconds"] for run in runs)}
        if "loop_seconds" in out:
            out["loop_seconds"] = statistics.median(run["loop_seconds"] for run in runs)
        if args.repeat > 1:
            out["runs"] = [round(run["seconds"], 4) for run in runs]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
