"""Finding the processes a test started, through /proc (no psutil needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def sleep_processes(marker: str) -> list[int]:
    """Pids of running `sleep <marker>` commands; tests pick an unusual duration as marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:1] and cmdline[0].endswith(b"sleep") and marker.encode() in cmdline:
            found.append(int(proc.name))
    return [pid for pid in found if alive(pid)]


def parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid"))


def pool_process_running(marker: str) -> int | None:
    """The pid of the Celery pool process that started `sleep <marker>`."""
    for pid in sleep_processes(marker):
        parent = parent_of(pid)
        if parent is not None:
            return parent
    return None


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in out.split()]


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
