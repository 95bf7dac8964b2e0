"""Prometheus helpers shared by every service: buckets, multiprocess set-up, exposition.

Names follow Prometheus conventions (`conveyor_` prefix, `_total`, `_seconds`); labels are
bounded sets only (job type, route template, method, status, reason): never a job id,
user input or command argument.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for us
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges (jobs in progress) of processes that died without saying so.

    A pool process killed by a signal (out of memory, SIGKILL) never runs its shutdown hook,
    so without this its in-progress job would count forever.
    """
    for path in directory.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            mark_process_dead(int(pid), str(directory))


def exposition() -> bytes:
    """The text format for `/metrics`, merged across processes when multiprocess is on."""
    if _multiprocess_dir is None:
        return generate_latest(REGISTRY)
    _forget_dead_processes(_multiprocess_dir)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(_multiprocess_dir))
    return generate_latest(registry)
