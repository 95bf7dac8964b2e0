"""Processes started for a run: each in its own process group, its output in one log file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
# How much of a log an error message shows: the end, where a crash's traceback is.
LOG_TAIL = 8000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One started process: `name` also names its log, `logdir/<name>.log`."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self, waiting_for: str = "") -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.process.poll() is not None:
            during = f" waiting for {waiting_for}" if waiting_for else ""
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}{during}:\n"
                + self.log()[-LOG_TAIL:]
            )

    def wait_for_log(self, needle: str, timeout: float, watch: Iterable[Proc] = ()) -> None:
        """Wait until the log holds `needle`; fail early if this process or one in `watch`
        exits."""
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            check_alive([self, *watch], f"{self.name} to log {needle!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} never logged {needle!r} in {timeout:.0f}s:\n"
                    + self.log()[-LOG_TAIL:]
                )
            time.sleep(0.1)

    def terminate(self) -> None:
        """SIGTERM the whole process group (the process and what it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> None:
        """Wait for the process to exit; after `timeout` seconds SIGKILL its group."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self, timeout: float = 20) -> None:
        self.terminate()
        self.wait_or_kill(timeout)


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    logdir: Path,
    *,
    append: bool = False,
) -> Proc:
    """Start `argv` in a new session (its own process group), stdin from /dev/null, stdout
    and stderr to `logdir/<name>.log` (emptied first unless `append`)."""
    log_path = logdir / f"{name}.log"
    with log_path.open("ab" if append else "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, process, log_path)


def check_alive(procs: Iterable[Proc], waiting_for: str = "") -> None:
    """Raise for the first of `procs` that has exited."""
    for proc in procs:
        proc.check_alive(waiting_for)


def stop_all(procs: Iterable[Proc], timeout: float = 20) -> None:
    """SIGTERM every process group at once, then wait for each (SIGKILL after `timeout`)."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait_or_kill(timeout)
