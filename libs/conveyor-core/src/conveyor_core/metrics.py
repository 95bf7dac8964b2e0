"""Prometheus helpers shared by every service: buckets, multiprocess set-up, exposition.

Names follow Prometheus conventions (`conveyor_` prefix, `_total`, `_seconds`); labels are
bounded sets only (job type, route template, method, status, reason): never a job id,
user input or command argument.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

# Jobs last from milliseconds to hours: buckets up to 8 h.
JOB_SECONDS_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    28800,
)
# HTTP and publishing are expected to be fast: sub-millisecond to seconds.
REQUEST_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)

_multiprocess_dir: Path | None = None


def enable_multiprocess(directory: Path) -> None:
    """Make every metric child created from now on live in mmap files under `directory`.

    A Celery prefork worker runs jobs in child processes; without this their samples would
    be invisible to the server in the main process.
    """
    global _multiprocess_dir
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    _multiprocess_dir = directory


def exposition() -> bytes:
    """The text format for `/metrics`, merged across processes when multiprocess is on."""
    if _multiprocess_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_multiprocess_dir))
    return generate_latest(registry)
