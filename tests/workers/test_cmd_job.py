"""cmd.run against real processes: argv only, scrubbed, unprivileged, limited, killable."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs.cmd import CommandParams, CommandResult
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG, CatalogCommand, Settings
from conveyor_core.worker.context import JobCancelled, JobContext, JobFailed
from conveyor_worker_cmd import job as cmd_job
from conveyor_worker_cmd.job import run
from conveyor_worker_cmd.sandbox import remove_tree

PYTHON = "/usr/bin/python3"
NOBODY_UID = 65534

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
requires_python = pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"needs {PYTHON}")

MakeContext = Callable[..., JobContext]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def make_ctx(tmp_path: Path) -> MakeContext:
    """A JobContext whose settings have the default catalog plus `extra` commands."""

    def make(extra: dict[str, str] | None = None, **overrides: object) -> JobContext:
        catalog = dict(DEFAULT_COMMAND_CATALOG)
        for name, executable in (extra or {}).items():
            catalog[name] = CatalogCommand(executable=executable, max_args=16)
        settings = Settings(command_catalog=catalog).model_copy(update=overrides)
        return JobContext(uuid.uuid4(), settings, ArtifactStore(str(tmp_path / "artifacts")))

    return make


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pids (= process group ids) of the commands the sandbox starts during a test."""
    pids: list[int] = []

    class RecordingPopen(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pids.append(self.pid)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    return pids


@pytest.fixture
def watch_workdirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the private working directories the sandbox creates."""
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(prefix: str | None = None) -> str:
        path = real_mkdtemp(prefix=prefix)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    return made


# --- helpers ----------------------------------------------------------------------------


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def live_processes_in_session(sid: int) -> list[int]:
    """Pids of non-zombie processes in session `sid` (the sandbox's group and session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X") and sid in (int(fields[2]), int(fields[3])):
            found.append(int(entry))
    return found


def assert_nothing_left(pgid: int) -> None:
    assert group_is_gone(pgid)
    assert live_processes_in_session(pgid) == []


def cmd(command: str, *args: str, **fields: object) -> CommandParams:
    return CommandParams.model_validate({"command": command, "args": list(args), **fields})


# --- argv, stdin, admission -------------------------------------------------------------


def test_arguments_reach_the_command_literally(make_ctx: MakeContext) -> None:
    shellish = ["$(id)", ";", "`whoami`", "&&", "|", "*", "$HOME"]
    ctx = make_ctx()
    result = run(cmd("echo", *shellish), ctx)
    assert result.stdout == " ".join(shellish) + "\n"
    assert (result.exit_code, result.timed_out, result.truncated) == (0, False, False)
    assert ctx.progress == 1.0


def test_stdin_is_fed_to_the_command(make_ctx: MakeContext) -> None:
    text = "conveyor\n" * 20_000  # larger than a pipe buffer
    result = run(cmd("sha256sum", stdin=text), make_ctx())
    assert result.stdout.split()[0] == hashlib.sha256(text.encode()).hexdigest()


def test_non_zero_exit_is_a_result_not_a_failure(make_ctx: MakeContext) -> None:
    result = run(cmd("false"), make_ctx({"false": "false"}))
    assert result.exit_code == 1


@requires_python
@pytest.mark.timeout(120)
def test_a_command_that_closed_its_output_is_waited_for_not_polled(
    make_ctx: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once both pipes are at EOF, the job waits on the process itself; it used to sleep a
    # poll interval there, which every short command paid when its exit came a moment after
    # its EOF. With an interval of 10 minutes, this command must still end in a second.
    monkeypatch.setattr(cmd_job, "POLL_INTERVAL_S", 600.0)
    script = "import os, time; print('bye', flush=True); os.close(1); os.close(2); time.sleep(0.5)"
    result = run(cmd("python3", "-c", script), make_ctx({"python3": PYTHON}))
    assert (result.stdout, result.exit_code, result.timed_out) == ("bye\n", 0, False)
    assert result.duration_s < 60


def test_command_outside_the_catalog_is_refused(make_ctx: MakeContext) -> None:
    with pytest.raises(JobFailed, match="not in the command catalog"):
        run(cmd("rm", "-rf", "/"), make_ctx())


def test_too_many_arguments_are_refused(make_ctx: MakeContext) -> None:
    with pytest.raises(JobFailed, match="at most 1 arguments"):
        run(cmd("sleep", "1", "2"), make_ctx())


def test_timeout_above_the_cap_is_refused(make_ctx: MakeContext) -> None:
    with pytest.raises(JobFailed, match="exceeds the limit"):
        run(cmd("sleep", "1", timeout_s=100), make_ctx(cmd_max_timeout_s=10))


def test_missing_executable_fails_the_job(make_ctx: MakeContext) -> None:
    with pytest.raises(JobFailed, match="was not found"):
        run(cmd("ghost"), make_ctx({"ghost": "no-such-program-conveyor"}))


def test_relative_executable_path_is_not_looked_up(make_ctx: MakeContext) -> None:
    with pytest.raises(JobFailed, match="was not found"):
        run(cmd("local"), make_ctx({"local": "bin/echo"}))


# --- isolation --------------------------------------------------------------------------


def test_environment_is_scrubbed(
    make_ctx: MakeContext, monkeypatch: pytest.MonkeyPatch, watch_workdirs: list[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://user:hunter2@db/conveyor")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    result = run(cmd("env"), make_ctx({"env": "/usr/bin/env"}))
    assert "hunter2" not in result.stdout
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines())
    [workdir] = watch_workdirs
    assert variables == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
    }


@requires_root
def test_command_runs_as_nobody(make_ctx: MakeContext) -> None:
    result = run(cmd("id", "-u"), make_ctx({"id": "id"}))
    assert int(result.stdout) == NOBODY_UID
    groups = run(cmd("id", "-G"), make_ctx({"id": "id"}))
    assert "0" not in groups.stdout.split()  # root's groups are dropped too


def test_workdir_is_private_and_removed(make_ctx: MakeContext, watch_workdirs: list[str]) -> None:
    result = run(
        cmd("sh", "-c", "pwd; touch left-behind; mkdir -p a/b; chmod 0 a"),
        make_ctx({"sh": "/bin/sh"}),
    )
    [workdir] = watch_workdirs
    assert result.stdout.strip() == workdir
    assert result.exit_code == 0
    assert not os.path.exists(workdir)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody owns, outside pytest's root-only tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-test-"))
    os.chown(path, NOBODY_UID, NOBODY_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@requires_root
def test_unprivileged_worker_removes_a_locked_workdir(nobody_dir: Path) -> None:
    """A worker that is not root can still delete the 0000 directories its command left."""
    workdir = nobody_dir / "workdir"
    (workdir / "locked" / "deeper").mkdir(parents=True)
    (workdir / "locked" / "deeper" / "file").write_text("x")
    for path in (workdir, workdir / "locked", workdir / "locked" / "deeper"):
        os.chown(path, NOBODY_UID, NOBODY_UID)
    (workdir / "locked").chmod(0)
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and removes the tree, as a non-root worker would
        os.setgid(NOBODY_UID)
        os.setuid(NOBODY_UID)
        remove_tree(str(workdir))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not workdir.exists()


@requires_python
def test_limits_are_applied_in_the_child(make_ctx: MakeContext) -> None:
    probe = (
        "import ctypes, os, resource as r\n"
        "sig = ctypes.c_int()\n"
        "ctypes.CDLL(None).prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG\n"
        "names = ['RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_NOFILE', 'RLIMIT_CORE']\n"
        "leads_session = os.getsid(0) == os.getpid()\n"
        "print(*[r.getrlimit(getattr(r, n))[0] for n in names], sig.value, leads_session)\n"
    )
    ctx = make_ctx(
        {"python3": PYTHON},
        cmd_max_memory_bytes=300_000_000,
        cmd_max_processes=30,
        cmd_max_open_files=100,
    )
    result = run(cmd("python3", "-c", probe, timeout_s=10), ctx)
    expected = ["15", "300000000", "30", "100", "0", "9", "True"]  # CPU = timeout + 5 s
    assert result.stdout.split() == expected, result.stderr


# --- timeouts, cancellation, cleanup ----------------------------------------------------


def test_timeout_kills_the_process_group(make_ctx: MakeContext, spawned: list[int]) -> None:
    started = time.monotonic()
    result = run(cmd("sleep", "30", timeout_s=1), make_ctx())
    assert time.monotonic() - started < 4
    assert result.timed_out
    assert result.exit_code < 0  # killed by a signal
    assert 1 <= result.duration_s < 4
    [pgid] = spawned
    assert_nothing_left(pgid)


def test_timeout_kills_children_that_ignore_sigterm(
    make_ctx: MakeContext, spawned: list[int]
) -> None:
    script = "trap '' TERM; sleep 30 & sleep 30 & wait"
    started = time.monotonic()
    result = run(cmd("sh", "-c", script, timeout_s=1), make_ctx({"sh": "/bin/sh"}))
    assert result.timed_out
    assert time.monotonic() - started < 5  # 1 s timeout + 2 s grace + SIGKILL
    assert_nothing_left(spawned[0])


def test_cancel_stops_the_command(make_ctx: MakeContext, spawned: list[int]) -> None:
    ctx = make_ctx()
    outcome: list[BaseException | CommandResult] = []

    def job() -> None:
        try:
            outcome.append(run(cmd("sleep", "30"), ctx))
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=job)
    worker.start()
    time.sleep(0.5)
    cancelled_at = time.monotonic()
    ctx.request_cancel()
    worker.join(timeout=5)
    assert time.monotonic() - cancelled_at < 3
    assert len(outcome) == 1
    assert isinstance(outcome[0], JobCancelled)
    assert_nothing_left(spawned[0])


def test_cancel_before_start_runs_nothing(make_ctx: MakeContext, spawned: list[int]) -> None:
    ctx = make_ctx()
    ctx.request_cancel()
    with pytest.raises(JobCancelled):
        run(cmd("sleep", "30"), ctx)
    assert spawned == []


def test_async_exception_still_kills_the_command(
    make_ctx: MakeContext, spawned: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery raises SoftTimeLimitExceeded in the job's thread; the command must not outlive it."""

    ctx = make_ctx()
    report_progress = ctx.report_progress

    def soft_limit_on_first_running_report(fraction: float) -> None:
        if 0.05 < fraction < 1.0:
            raise SoftTimeLimitExceeded()
        report_progress(fraction)

    monkeypatch.setattr(ctx, "report_progress", soft_limit_on_first_running_report)
    with pytest.raises(SoftTimeLimitExceeded):
        run(cmd("sleep", "30", timeout_s=30), ctx)
    assert_nothing_left(spawned[0])


def test_background_processes_do_not_outlive_the_command(
    make_ctx: MakeContext, spawned: list[int]
) -> None:
    # The child moves into its own process group; the session still finds it.
    script = "import subprocess; subprocess.Popen(['sleep', '30'], process_group=0)"
    started = time.monotonic()
    result = run(cmd("python3", "-c", script), make_ctx({"python3": PYTHON}))
    assert result.exit_code == 0
    assert time.monotonic() - started < 3
    assert_nothing_left(spawned[0])


@requires_root
@requires_python
def test_daemons_that_leave_the_session_are_killed(make_ctx: MakeContext) -> None:
    # Popen returns only after the child's setsid() and exec, so the daemon has really left.
    script = (
        "import subprocess; print(subprocess.Popen(['sleep', '30'], start_new_session=True).pid)"
    )
    result = run(cmd("python3", "-c", script), make_ctx({"python3": PYTHON}))
    daemon = int(result.stdout)
    stat = Path(f"/proc/{daemon}/stat")
    assert not stat.exists(), stat.read_bytes()  # killed, and reaped by the worker


# --- output and resource limits ---------------------------------------------------------


def test_huge_output_is_truncated_and_the_job_ends(make_ctx: MakeContext) -> None:
    ctx = make_ctx({"yes": "/usr/bin/yes"}, cmd_max_output_bytes=1000)
    started = time.monotonic()
    result = run(cmd("yes", timeout_s=2), ctx)
    assert time.monotonic() - started < 5
    assert len(result.stdout) <= 1000
    assert result.stdout.startswith("y\ny\n")
    assert result.truncated
    assert result.timed_out


def test_invalid_utf8_is_replaced(make_ctx: MakeContext) -> None:
    result = run(cmd("printf", r"ok\377\n"), make_ctx({"printf": "printf"}))
    assert result.stdout == "ok\ufffd\n"


@requires_root
def test_process_limit_stops_a_fork_bomb(make_ctx: MakeContext, spawned: list[int]) -> None:
    script = "for i in $(seq 200); do sleep 5 & done; wait"
    ctx = make_ctx({"sh": "/bin/sh"}, cmd_max_processes=20)
    started = time.monotonic()
    result = run(cmd("sh", "-c", script, timeout_s=10), ctx)
    assert result.exit_code != 0 or "Resource temporarily unavailable" in result.stderr
    assert "fork" in result.stderr.lower() or "unavailable" in result.stderr.lower()
    assert time.monotonic() - started < 5
    assert_nothing_left(spawned[0])


@requires_python
def test_memory_limit_stops_a_large_allocation(make_ctx: MakeContext) -> None:
    ctx = make_ctx({"python3": PYTHON}, cmd_max_memory_bytes=256 * 1024 * 1024)
    result = run(cmd("python3", "-c", "block = bytearray(1024 ** 3)"), ctx)
    assert result.exit_code != 0
    assert "MemoryError" in result.stderr


def test_progress_is_reported_while_running(
    make_ctx: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[float] = []

    ctx = make_ctx()
    report_progress = ctx.report_progress

    def recording(fraction: float) -> None:
        reported.append(fraction)
        report_progress(fraction)

    monkeypatch.setattr(ctx, "report_progress", recording)
    run(cmd("sleep", "1.5", timeout_s=3), ctx)
    assert reported[0] == 0.05
    assert reported[-1] == 1.0
    assert any(0.05 < fraction <= 0.95 for fraction in reported[1:-1])
    assert reported == sorted(reported)
