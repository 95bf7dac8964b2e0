"""Run one argv locked down: no shell, scrubbed environment, private directory, an
unprivileged user, Landlock and seccomp (confine.py), resource limits, its own session
and user namespace, and nothing left behind afterwards."""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from conveyor_worker_cmd.confine import Confinement, Isolation
from conveyor_worker_cmd.proctree import PR_SET_PDEATHSIG, ProcessTree, prctl
from conveyor_worker_cmd.streams import LineHandler, StreamPump

LOOKUP_PATH = "/usr/local/bin:/usr/bin:/bin"
CHILD_PATH = "/usr/bin:/bin"
CPU_SLACK_S = 5  # RLIMIT_CPU backs up the wall-clock timeout; it must never fire first
REAP_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 1.0

RlimitSettings = list[tuple[int, tuple[int, int]]]


class SandboxError(Exception):
    """The command could not be started; the message says why."""


def resolve_executable(name: str) -> str | None:
    """An absolute path as is; a bare name looked up on a fixed PATH, never the worker's."""
    if os.path.isabs(name):
        return name
    if os.sep in name:  # a relative path would depend on the worker's working directory
        return None
    return shutil.which(name, path=LOOKUP_PATH)


@dataclass(frozen=True)
class Identity:
    """The uid and primary gid a command runs as."""

    uid: int
    gid: int


def identity_for(user: str) -> Identity | None:
    """`user`'s identity when the worker is root (it must not lend root out); None means
    the worker is unprivileged and the command runs as the worker's own user, kept from
    the worker's files and processes by its confinement (confine.py), not by the uid."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SandboxError(f"run-as user {user!r} does not exist") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"run-as user {user!r} is root; commands never run as root")
    return Identity(uid=entry.pw_uid, gid=entry.pw_gid)


@contextlib.contextmanager
def private_workdir(identity: Identity | None) -> Iterator[str]:
    """A fresh 0700 directory owned by the command's user, removed afterwards."""
    path = tempfile.mkdtemp(prefix="conveyor-cmd-")
    try:
        if identity is not None:
            os.chown(path, identity.uid, identity.gid)
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: str) -> None:
    """Delete a working directory, whatever permissions the command left on it."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path) and os.geteuid() != 0:
        with contextlib.suppress(OSError):
            _open_up_directories(path)
        shutil.rmtree(path, ignore_errors=True)


def _open_up_directories(path: str) -> None:
    # Unprivileged, the command ran as our own uid and may have left 0000 directories; a
    # chmod it could have made itself gives nothing away. Root needs none of this.
    os.chmod(path, 0o700)
    for parent, directories, _ in os.walk(path):
        for name in directories:
            directory = os.path.join(parent, name)
            if not os.path.islink(directory):
                os.chmod(directory, 0o700)


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    max_output_bytes: int
    max_memory_bytes: int
    max_processes: int
    max_open_files: int

    def rlimits(self) -> RlimitSettings:
        """(resource, (soft, hard)) pairs, never above the worker's own hard limits."""
        cpu_s = math.ceil(self.timeout_s) + CPU_SLACK_S
        wanted = {
            resource.RLIMIT_CPU: (cpu_s, cpu_s + 1),  # SIGXCPU, then SIGKILL a second later
            resource.RLIMIT_AS: (self.max_memory_bytes,) * 2,
            resource.RLIMIT_NPROC: (self.max_processes,) * 2,
            resource.RLIMIT_NOFILE: (self.max_open_files,) * 2,
            resource.RLIMIT_CORE: (0, 0),  # a core dump could hold the stdin we were given
        }
        return [(res, _within_current_hard(res, *pair)) for res, pair in wanted.items()]


def _within_current_hard(res: int, soft: int, hard: int) -> tuple[int, int]:
    # The child sets these after dropping privileges, so it cannot raise a hard limit.
    current_hard = resource.getrlimit(res)[1]
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    return min(soft, hard), hard


def child_environment(workdir: str) -> dict[str, str]:
    """All the command sees of the environment: nothing of the worker's (no secrets)."""
    return {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def _child_setup(
    rlimits: RlimitSettings, parent_pid: int, confinement: Confinement
) -> Callable[[], None]:
    def setup() -> None:
        # Runs in the forked child after setuid and before exec: keep it to plain syscalls.
        confinement.apply_before_limits()
        for res, limits in rlimits:
            resource.setrlimit(res, limits)
        # Die with the worker's pool process instead of running on unsupervised.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the line above took effect
            os._exit(1)
        confinement.apply_last()

    return setup


@dataclass(frozen=True)
class Output:
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool


class Sandbox:
    """One running command. `stop` may be called from any thread; the rest from one."""

    def __init__(
        self,
        argv: list[str],
        *,
        workdir: str,
        identity: Identity | None,
        isolation: Isolation,
        limits: Limits,
        stdin: bytes | None,
        stop_grace_s: float,
        on_line: LineHandler | None = None,
    ) -> None:
        self.stop_grace_s = stop_grace_s
        self._lock = threading.Lock()
        self._kill_at: float | None = None
        self._closed = False
        self._swept = False
        self._proc = _start(argv, workdir, identity, isolation, limits, stdin is not None)
        self._tree = ProcessTree(self._proc.pid, identity.uid if identity else None)
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._pump = StreamPump(
            self._proc.stdin,
            self._proc.stdout,
            self._proc.stderr,
            stdin or b"",
            limits.max_output_bytes,
            on_line,
        )

    @property
    def pid(self) -> int:
        """Also the id of the command's process group and session."""
        return self._proc.pid

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def step(self, timeout: float) -> bool:
        """Move I/O for up to `timeout` seconds; False once the command has exited."""
        if self._pump.open:
            self._pump.pump(timeout)
        else:
            # Its pipes are at EOF, so it is exiting (or a quiet process): wait for the exit
            # itself. A fixed sleep here cost every short command up to `timeout`.
            self._wait_for_leader(time.monotonic() + timeout)
        self._kill_if_grace_over()
        with self._lock:
            return self._proc.poll() is None

    def stop(self, grace_s: float) -> None:
        """Ask the whole tree to end: SIGTERM now, SIGKILL once `grace_s` has passed."""
        with self._lock:
            if self._closed or self._kill_at is not None or self._proc.poll() is not None:
                return
            self._kill_at = time.monotonic() + grace_s
            self._tree.signal(signal.SIGTERM)
            self._tree.signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only when resumed

    def finish(self) -> Output:
        """After the command exited: kill what it left running and collect its output."""
        self.shutdown()
        self._pump.drain(DRAIN_TIMEOUT_S)
        return Output(
            exit_code=-signal.SIGKILL if self._proc.returncode is None else self._proc.returncode,
            stdout=bytes(self._pump.stdout.data),
            stderr=bytes(self._pump.stderr.data),
            truncated=self._pump.stdout.truncated or self._pump.stderr.truncated,
        )

    def shutdown(self) -> None:
        """Make sure nothing of the command survives: graceful stop, then SIGKILL and reap.

        The SIGKILL sits in `finally` so that even an exception raised into this thread
        during the grace period (Celery's SoftTimeLimitExceeded) cannot skip it.
        """
        try:
            if self._proc.poll() is None:
                self.stop(self.stop_grace_s)
                self._wait_for_leader(self._kill_at)
        finally:
            self._kill_everything()

    def close(self) -> None:
        try:
            self.shutdown()
        finally:
            with self._lock:
                self._closed = True
            self._pump.close()

    def _wait_for_leader(self, until: float | None) -> None:
        timeout = max(0.0, until - time.monotonic()) if until is not None else 0.0
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)

    def _kill_if_grace_over(self) -> None:
        with self._lock:
            due = self._kill_at is not None and time.monotonic() >= self._kill_at
            if due and self._proc.poll() is None:
                self._tree.signal(signal.SIGKILL)

    def _kill_everything(self) -> None:
        with self._lock:
            if self._swept:  # `finish` swept already; `close` has nothing left to find
                return
            self._tree.kill_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(REAP_TIMEOUT_S)  # only a process stuck in the kernel waits
            self._tree.kill()  # and what left the group, until none is alive
            self._swept = True


def _start(
    argv: list[str],
    workdir: str,
    identity: Identity | None,
    isolation: Isolation,
    limits: Limits,
    with_stdin: bool,
) -> subprocess.Popen[bytes]:
    """Build the confinement here in the worker, so the forked child only makes syscalls."""
    uid, gid = (identity.uid, identity.gid) if identity else (os.geteuid(), os.getegid())
    try:
        confinement = Confinement(isolation, workdir, argv[0], uid, gid)
    except OSError as error:
        raise SandboxError(f"could not prepare the sandbox: {error}") from error
    try:
        return _spawn(argv, workdir, identity, limits, with_stdin, confinement)
    finally:
        confinement.close()  # the child had its own copy of the ruleset fd until exec


def _spawn(
    argv: list[str],
    workdir: str,
    identity: Identity | None,
    limits: Limits,
    with_stdin: bool,
    confinement: Confinement,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv,
            shell=False,  # argv is passed literally; "$(id)" stays "$(id)"
            stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=child_environment(workdir),
            user=identity.uid if identity else None,
            group=identity.gid if identity else None,
            extra_groups=[] if identity else None,  # drop root's supplementary groups
            umask=0o077,
            start_new_session=True,  # its own session and process group: killable as a whole
            close_fds=True,
            preexec_fn=_child_setup(limits.rlimits(), os.getpid(), confinement),
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxError(f"could not start {argv[0]}: {error}") from error
