"""What a command's child does to itself between fork and exec, prepared in the worker.

The worker may run as the very uid its commands run as (uid 10001 in the image, the
caller's under `make run`), so file permissions separate nothing. What does, with no
privilege at all:

- Landlock: the command may read the system paths programs need, read and write its own
  scratch directory, and nothing else; no TCP bind or connect; no signal or abstract
  unix socket beyond its own processes (ABI >= 6).
- no_new_privs and a seccomp deny-list (see seccomp.py): no ptrace, no other process's
  memory, no sockets, no namespaces, no mounts, no keyring, no bpf.
- A user namespace of its own, only to count its processes apart: the kernel counts
  RLIMIT_NPROC per user namespace, so a fork bomb in one job cannot starve another job
  of the same uid. It maps the uid to itself and grants nothing after exec.
- The worker itself is not dumpable: its /proc/<pid>/environ and memory stay closed to
  same-uid processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from dataclasses import dataclass

from conveyor_worker_cmd import landlock
from conveyor_worker_cmd.proctree import prctl
from conveyor_worker_cmd.seccomp import Filter, command_filter

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000

# Read (and execute) only: what dynamically linked programs, their locale and time zone
# data need. Not /etc as a whole, not /proc, /sys, /home, /tmp or /var.
SYSTEM_READ_ONLY = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
DEVICES_READ_WRITE = ("/dev/null",)

_libc = ctypes.CDLL(None, use_errno=True)


class ConfinementError(OSError):
    pass


@dataclass(frozen=True)
class Isolation:
    """What this kernel and architecture let the worker apply to a command."""

    landlock_abi: int
    seccomp: bool
    user_namespaces: bool

    @property
    def complete(self) -> bool:
        """Landlock and seccomp both apply: commands reach no file, socket or process of the
        worker (docs/guarantees.md). `gaps` may still name lesser ones."""
        return self.landlock_abi >= 1 and self.seccomp

    def gaps(self) -> list[str]:
        """What does not hold here, in words for the log and the job's error."""
        found = []
        if self.landlock_abi < 1:
            found.append(
                "Landlock is unavailable: commands can read and write every file the uid can"
            )
        elif self.landlock_abi < 6:
            found.append(
                f"Landlock ABI {self.landlock_abi} < 6: commands can signal the worker's processes"
            )
        if not self.seccomp:
            found.append("no seccomp filter for this architecture: sockets and ptrace are open")
        if not self.user_namespaces:
            found.append("no user namespaces: RLIMIT_NPROC is shared by every process of the uid")
        return found


@functools.cache
@functools.cache  # the kernel's answer holds for the process's life; asking forks a child
def probe(uid: int, gid: int) -> Isolation:
    """Ask the kernel what applies to commands running as `uid`:`gid`, once per process."""
    return Isolation(
        landlock_abi=landlock.abi_version(),
        seccomp=_command_filter() is not None,
        user_namespaces=_user_namespace_works(uid, gid),
    )


@functools.cache
def _command_filter() -> Filter | None:
    return command_filter()


def make_non_dumpable() -> None:
    """Close this process's /proc/<pid>/environ, mem and ptrace to processes of its own uid.

    Inherited by forked children (the pool processes); reset by exec (the commands)."""
    if not prctl(PR_SET_DUMPABLE, 0):
        raise ConfinementError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    return int(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) == 1


class Confinement:
    """One command's restrictions, built in the worker; `apply_*` run in the forked child
    and only make syscalls on what was prepared here."""

    def __init__(self, isolation: Isolation, workdir: str, executable: str, uid: int, gid: int):
        self._ruleset: int | None = None
        if isolation.landlock_abi >= 1:
            self._ruleset = landlock.create_ruleset(
                isolation.landlock_abi,
                read_only=(*SYSTEM_READ_ONLY, executable),
                read_write=(workdir,),
                device_rw=DEVICES_READ_WRITE,
            )
        self._filter = _command_filter() if isolation.seccomp else None
        self._id_maps = _id_maps(uid, gid) if isolation.user_namespaces else None

    def apply_before_limits(self) -> None:
        """First, so the namespace is made under the worker's RLIMIT_NPROC, not the command's."""
        if self._id_maps is not None:
            _enter_user_namespace(*self._id_maps)

    def apply_last(self) -> None:
        """Lock the child down; nothing it does after this can loosen it."""
        if not prctl(PR_SET_NO_NEW_PRIVS, 1):
            raise ConfinementError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if self._ruleset is not None:
            landlock.restrict_self(self._ruleset)
        if self._filter is not None:
            self._filter.install()

    def close(self) -> None:
        if self._ruleset is not None:
            os.close(self._ruleset)
            self._ruleset = None


def _id_maps(uid: int, gid: int) -> tuple[bytes, bytes]:
    return f"{uid} {uid} 1\n".encode(), f"{gid} {gid} 1\n".encode()


def _enter_user_namespace(uid_map: bytes, gid_map: bytes) -> None:
    if _libc.unshare(CLONE_NEWUSER) != 0:
        raise ConfinementError(ctypes.get_errno(), "unshare(CLONE_NEWUSER) failed")
    # A non-dumpable process's /proc/self files belong to root: writable again for a moment.
    prctl(PR_SET_DUMPABLE, 1)
    try:
        _write("/proc/self/setgroups", b"deny")  # required before an unprivileged gid_map
        _write("/proc/self/uid_map", uid_map)
        _write("/proc/self/gid_map", gid_map)
    finally:
        prctl(PR_SET_DUMPABLE, 0)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _user_namespace_works(uid: int, gid: int) -> bool:
    """Try it in a throwaway child, as the command's uid (a root worker drops to it first)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only makes syscalls and exits
        code = 1
        with contextlib.suppress(BaseException):
            if os.geteuid() != uid:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            _enter_user_namespace(*_id_maps(uid, gid))
            code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
