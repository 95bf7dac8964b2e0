"""Find, signal and reap every process a command left behind (Linux, via /proc and prctl).

A command leads its own session and process group, but a child can leave both (setpgid,
setsid, daemonising). The worker therefore becomes a child subreaper: orphans of the
command are re-parented to it instead of to PID 1, which in a container or a VM may
never reap them, and a zombie still counts against the run-as user's RLIMIT_NPROC.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_KILL_ROUNDS = 50
_ROUND_PAUSE_S = 0.01

# Resolved once in the parent: a forked child should not have to load libraries.
_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> bool:
    """Call prctl(2) with one argument; True when the kernel accepted it."""
    return int(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)) == 0


def become_subreaper() -> bool:
    """Adopt orphaned descendants of this process, so they can be killed and reaped."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgrp: int
    session: int
    state: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_process(pid: int) -> ProcessInfo | None:
    """The /proc view of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return ProcessInfo(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        state=fields[0].decode(),
    )


def owner_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def list_processes() -> Iterator[ProcessInfo]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := read_process(int(entry))) is not None:
            yield info


@dataclass(frozen=True)
class ProcessTree:
    """Everything started by one command: its group, its session and, when the command runs
    as a dedicated uid, our adopted orphans of that uid (daemons that left the session).

    Finding them means reading every process in /proc (a few ms on a busy node): each
    operation here scans once, and the owner is read only for our own children.
    """

    leader: int
    orphan_uid: int | None = None

    def members(self) -> list[ProcessInfo]:
        me = os.getpid()
        return [
            info
            for info in list_processes()
            if info.pid != me
            and (
                info.pgrp == self.leader
                or info.session == self.leader
                or (
                    self.orphan_uid is not None
                    and info.ppid == me
                    and owner_of(info.pid) == self.orphan_uid
                )
            )
        ]

    def kill_group(self, signum: int) -> None:
        """Send `signum` to the command's process group alone: no scan."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.leader, signum)

    def signal(self, signum: int) -> list[ProcessInfo]:
        """Send `signum` to the process group, then to members that left it; the members
        found, as they were before the signal."""
        self.kill_group(signum)
        members = self.members()
        for info in members:
            if info.alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(info.pid, signum)
        return members

    def kill(self) -> None:
        """SIGKILL every member until none is left alive, reaping the orphans we adopted.

        Repeats because a member may fork between the scan and the signal; RLIMIT_NPROC
        keeps that race short. A round whose scan finds nobody alive is the last: a
        process that is gone cannot fork.
        """
        for _ in range(_KILL_ROUNDS):
            members = self.signal(signal.SIGKILL)
            self._reap(members)
            if not any(info.alive for info in members):
                return
            time.sleep(_ROUND_PAUSE_S)

    def _reap(self, members: list[ProcessInfo]) -> None:
        # The leader belongs to its Popen object, which reaps it; the rest are ours. A
        # member this round's signal killed is reaped in the next round, which runs
        # because it was alive when scanned.
        me = os.getpid()
        for info in members:
            if info.pid != self.leader and info.ppid == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(info.pid, os.WNOHANG)
