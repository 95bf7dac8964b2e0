"""Processes, per-run RabbitMQ vhosts and PostgreSQL databases, and /proc readings.

The same ideas as tests/support/stack.py (real console scripts, one vhost and one
database per run, everything removed afterwards), kept here so the bench does not
depend on test code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from amqp.exceptions import NotFound
from kombu.connection import Connection

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_DSN = os.environ.get(
    "BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmqctl(*args: str, attempts: int = 3) -> str:
    """Run rabbitmqctl; retried, since the CLI's own Erlang node now and then fails to start
    while other sessions run theirs (a whole full run was lost to one such failure)."""
    for attempt in range(1, attempts + 1):
        result = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode == 0 or attempt == attempts:
            break
        time.sleep(2 * attempt)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, result.args, result.stdout, result.stderr
        )
    return result.stdout


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str) -> Iterator[str]:
    """A fresh vhost; yields its AMQP URL and deletes it (and every queue in it) afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


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


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"conveyor_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never logged {needle!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


def start(name: str, argv: list[str], env: dict[str, str], cwd: Path, logdir: Path) -> Proc:
    log_path = logdir / f"{name}.log"
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Proc(name, popen, log_path)


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
