"""The bench's side of conveyor_harness (the same processes, vhosts and databases as the
tests, without test code), AMQP purges, and /proc readings."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import conveyor_harness
from amqp.exceptions import NotFound
from conveyor_harness import Proc, free_port, rabbitmqctl
from kombu.connection import Connection

__all__ = ["Proc", "free_port", "rabbitmqctl"]  # used by the bench through this module

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_DSN = os.environ.get("BENCH_POSTGRES_DSN", conveyor_harness.POSTGRES_ADMIN_DSN)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str) -> Iterator[str]:
    """A fresh vhost; yields its AMQP URL and deletes it (and every queue in it) afterwards."""
    with conveyor_harness.rabbitmq_vhost(prefix) as vhost:
        yield vhost.url


def purge_queues(broker_url: str, queues: list[str]) -> None:
    """Empty `queues` over AMQP (rabbitmqctl takes a second a queue): a missing one is skipped.

    The interleaved throughput rounds purge after every run, so that no system meets a
    queue longer than the others did.
    """
    with Connection(broker_url, connect_timeout=10) as connection:  # type: ignore[no-untyped-call]
        for queue in queues:
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except NotFound:
                continue  # the server closed this channel; the next queue gets a new one
            channel.close()


def postgres_database() -> contextlib.AbstractContextManager[str]:
    """A fresh database on BENCH_POSTGRES_DSN's server; yields its SQLAlchemy URL."""
    return conveyor_harness.postgres_database("conveyor_bench_", POSTGRES_ADMIN_DSN)


def start(name: str, argv: list[str], env: dict[str, str], cwd: Path, logdir: Path) -> Proc:
    """Start a process; its log is appended to, so a name used twice keeps both runs' output
    (a failed run's logs are kept for reading)."""
    return conveyor_harness.start(name, argv, env, cwd, logdir, append=True)


# --- /proc readings


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    children = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _status_kb(pid: int, field: str, filename: str = "status") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{filename}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    """Resident set size of one process."""
    return _status_kb(pid, "VmRSS") / 1024


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children: shared pages counted once."""
    return sum(_status_kb(p, "Pss", "smaps_rollup") for p in tree(pid)) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (uvicorn --workers)."""
    return sum(cpu_seconds(p) for p in tree(pid))
