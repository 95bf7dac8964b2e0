"""cmd.run under an unprivileged worker: the command shares the worker's uid, yet reaches
none of the worker's secrets, files, processes or network.

The worker side runs as uid 65534 with no capabilities, as the image (uid 10001) and
`make run` (the caller's uid) run it: each job is a real `run` in a real process started
under setpriv (cmd_worker_process.py), and the commands are real programs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs.base import AdmissionDenied
from conveyor_core.jobs.cmd import CommandParams, admit_command
from conveyor_core.settings import Settings
from conveyor_core.worker.context import JobContext, JobFailed
from conveyor_worker_cmd import job as cmd_job
from conveyor_worker_cmd.confine import Isolation
from conveyor_worker_cmd.landlock import abi_version

WORKER_UID = 65534  # the worker's uid, and so the command's: nobody
HELPER = Path(__file__).with_name("cmd_worker_process.py")
VENV_BIN = Path(sys.executable).parent
PYTHON = "/usr/bin/python3"
PASSWD_LINE = "root:x:0:0"

BROKER_SECRET = "broker-secret-e4b1"
STORE_SECRET = "store-secret-91c2"
ARTIFACT_SECRET = "artifact-secret-5d0e"
HOME_SECRET = "home-secret-7f3a"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the worker as another uid"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]
requires_landlock = pytest.mark.skipif(
    abi_version() < 1, reason="the kernel has no Landlock; see test_weak_isolation_*"
)
requires_python = pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"needs {PYTHON}")


# --- the unprivileged worker ------------------------------------------------------------


@dataclass(frozen=True)
class WorkerFiles:
    """What a worker at WORKER_UID owns: its home, its job store, every job's artifacts."""

    root: Path
    home: Path
    store: Path
    artifacts: Path
    other_jobs_artifact: Path

    def environment(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "CONVEYOR_BROKER_URL": f"amqp://conveyor:{BROKER_SECRET}@127.0.0.1:1//",
            "CONVEYOR_DATABASE_URL": f"sqlite:///{self.store}",
            "CONVEYOR_ARTIFACT_URL": str(self.artifacts),
        }


@pytest.fixture(scope="module")
def worker_files() -> Iterator[WorkerFiles]:
    root = Path(tempfile.mkdtemp(prefix="conveyor-worker-"))
    home = root / "home"
    home.mkdir()
    (home / "secret.txt").write_text(HOME_SECRET)
    store = root / "store" / "jobs.db"
    store.parent.mkdir()
    with sqlite3.connect(store) as db:
        db.execute("create table jobs (result text)")
        db.execute("insert into jobs values (?)", (STORE_SECRET,))
    artifacts = root / "artifacts"
    other_jobs_artifact = artifacts / "jobs" / str(uuid.uuid4()) / "result.txt"
    other_jobs_artifact.parent.mkdir(parents=True)
    other_jobs_artifact.write_text(ARTIFACT_SECRET)
    for path in [root, *root.rglob("*")]:
        os.chown(path, WORKER_UID, WORKER_UID)
        path.chmod(0o700 if path.is_dir() else 0o600)
    yield WorkerFiles(root, home, store, artifacts, other_jobs_artifact)
    shutil.rmtree(root, ignore_errors=True)


def as_worker(argv: list[str]) -> list[str]:
    """`argv` as WORKER_UID, no supplementary groups, no capabilities of any kind."""
    uid = str(WORKER_UID)
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        *argv,
    ]


def start_job(
    files: WorkerFiles,
    command: str,
    *args: str,
    extra: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    timeout_s: int = 20,
) -> subprocess.Popen[str]:
    spec = {
        "params": {"command": command, "args": list(args), "timeout_s": timeout_s},
        "extra": extra or {},
        "settings": settings or {},
    }
    return subprocess.Popen(
        as_worker([sys.executable, str(HELPER), json.dumps(spec)]),
        env=files.environment(),
        cwd=files.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    answer: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return answer


def run_job(files: WorkerFiles, command: str, *args: str, **kwargs: Any) -> dict[str, Any]:
    return outcome(start_job(files, command, *args, **kwargs))


def everything_printed(answer: dict[str, Any]) -> str:
    result = answer.get("result") or {}
    return answer.get("failed", "") + result.get("stdout", "") + result.get("stderr", "")


# --- what the command can read ----------------------------------------------------------


def test_date_file_options_are_refused_before_anything_runs() -> None:
    """Defence in depth, and what the gateway and /execute check too (check_admission)."""
    settings = Settings()
    for args in (
        ["-f", "/etc/passwd"],
        ["--file=/etc/passwd"],
        ["--fi=/etc/passwd"],  # getopt accepts abbreviations
        ["-uf", "/etc/passwd"],
        ["-u", "-f/etc/passwd"],
        ["-r", "/etc/passwd"],
        ["--reference=/etc/passwd"],
        ['--date=TZ="/etc/passwd" now'],
    ):
        with pytest.raises(AdmissionDenied, match="is not an argument"):
            admit_command(CommandParams(command="date", args=args), settings)
    for args in (["+%s"], ["-u", "+%F %T"], ["--date=@0", "-R"], ["--iso-8601=seconds"]):
        admit_command(CommandParams(command="date", args=args), settings)


@requires_landlock
def test_date_f_etc_passwd_leaks_nothing(worker_files: WorkerFiles) -> None:
    refused = run_job(worker_files, "date", "-f", "/etc/passwd")
    assert "is not an argument" in refused["failed"]
    # And with the argument check out of the way, Landlock still keeps the file closed.
    unchecked = run_job(worker_files, "date-any", "-f", "/etc/passwd", extra={"date-any": "date"})
    printed = everything_printed(unchecked)
    assert PASSWD_LINE not in printed
    assert "Permission denied" in unchecked["result"]["stderr"]


@requires_landlock
def test_sha256sum_hashes_only_stdin_and_its_scratch_directory(worker_files: WorkerFiles) -> None:
    assert "at most 0 arguments" in run_job(worker_files, "sha256sum", "/etc/passwd")["failed"]
    extra = {"sha-any": "sha256sum"}
    answer = run_job(worker_files, "sha-any", "/etc/passwd", str(worker_files.store), extra=extra)
    assert answer["result"]["exit_code"] != 0
    assert answer["result"]["stdout"] == ""
    assert answer["result"]["stderr"].count("Permission denied") == 2


@requires_landlock
@pytest.mark.parametrize(
    ("what", "script", "secret"),
    [
        ("the worker's environment", "cat /proc/$PPID/environ", BROKER_SECRET),
        ("the worker's memory maps", "cat /proc/$PPID/maps", "python"),
        ("the job store", "cat {store}", STORE_SECRET),
        ("another job's artifacts", "cat {artifact}; ls {artifacts}/jobs", ARTIFACT_SECRET),
        ("the worker's home", "cat {home}/secret.txt; ls {home}", HOME_SECRET),
    ],
)
def test_command_cannot_read_what_its_worker_owns(
    worker_files: WorkerFiles, what: str, script: str, secret: str
) -> None:
    script = script.format(
        store=worker_files.store,
        artifact=worker_files.other_jobs_artifact,
        artifacts=worker_files.artifacts,
        home=worker_files.home,
    )
    answer = run_job(worker_files, "sh", "-c", script, extra={"sh": "/bin/sh"})
    assert secret not in everything_printed(answer), what
    assert answer["result"]["exit_code"] != 0
    assert "Permission denied" in answer["result"]["stderr"]


@requires_landlock
def test_command_writes_only_its_scratch_directory(worker_files: WorkerFiles) -> None:
    planted = [worker_files.home / "planted", worker_files.artifacts / "planted"]
    script = "echo kept > scratch && cat scratch; " + "; ".join(
        f"echo x > {path}" for path in planted
    )
    answer = run_job(worker_files, "sh", "-c", script, extra={"sh": "/bin/sh"})
    assert answer["result"]["stdout"] == "kept\n"
    assert answer["result"]["stderr"].count("Permission denied") == len(planted)
    assert not any(path.exists() for path in planted)


# --- processes, network -----------------------------------------------------------------


FORK_BOMB = """
import os, time  # fork-bomb-marker
forked = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        forked += 1
    except BlockingIOError:
        pass
print(forked, flush=True)
time.sleep(30)
"""


def bomb_processes() -> int:
    """Live processes of the worker's uid that the fork bomb started (they share its argv)."""
    count = 0
    for entry in os.listdir("/proc"):
        try:
            if os.stat(f"/proc/{entry}").st_uid != WORKER_UID:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        count += b"fork-bomb-marker" in cmdline and b"cmd_worker_process" not in cmdline
    return count


@requires_python
def test_fork_bomb_stops_at_its_limit_and_other_jobs_still_run(worker_files: WorkerFiles) -> None:
    """RLIMIT_NPROC counts per uid; each command gets a user namespace so it counts alone."""
    limit = 20
    bomb = start_job(
        worker_files,
        "python3",
        "-c",
        FORK_BOMB,
        extra={"python3": PYTHON},
        settings={"cmd_max_processes": limit},
        timeout_s=6,
    )
    deadline = time.monotonic() + 5
    while bomb_processes() < limit - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    other = run_job(
        worker_files,
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do /bin/true || exit 1; done; echo ran",
        extra={"sh": "/bin/sh"},
        settings={"cmd_max_processes": limit},
    )
    during = bomb_processes()
    bombed = outcome(bomb)["result"]
    assert other.get("result", {}).get("stdout") == "ran\n", other
    assert during == limit  # the bomb and the children it could fork, no more
    assert int(bombed["stdout"]) == limit - 1
    assert bombed["timed_out"]  # then killed, with all it started
    assert bomb_processes() == 0


@requires_python
def test_tcp_connect_to_a_listening_port_fails(worker_files: WorkerFiles) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('connected')\n"
        )
        answer = run_job(worker_files, "python3", "-c", code, extra={"python3": PYTHON})
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()
    assert "connected" not in answer["result"]["stdout"]
    assert "PermissionError" in answer["result"]["stderr"]


SECCOMP_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    "ptrace": lambda: libc.ptrace(0, 0, 0, 0),  # PTRACE_TRACEME
    "unshare": lambda: libc.unshare(0x10000000),  # CLONE_NEWUSER
    "add_key": lambda: libc.syscall(248, b"user", b"k", b"v", 1, -3),  # session keyring
    "bpf": lambda: libc.syscall(321, 0, 0, 0),
}
for name, call in calls.items():
    print(name, "refused" if call() == -1 and ctypes.get_errno() == 1 else "allowed")
"""


@requires_python
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86_64 numbers")
def test_seccomp_refuses_tracing_namespaces_keyring_and_bpf(worker_files: WorkerFiles) -> None:
    answer = run_job(worker_files, "python3", "-c", SECCOMP_PROBE, extra={"python3": PYTHON})
    verdicts = dict(line.split() for line in answer["result"]["stdout"].splitlines())
    assert verdicts == dict.fromkeys(["ptrace", "unshare", "add_key", "bpf"], "refused")


@pytest.mark.skipif(abi_version() < 6, reason="Landlock scopes signals from ABI 6")
def test_command_cannot_signal_its_worker(worker_files: WorkerFiles) -> None:
    answer = run_job(worker_files, "sh", "-c", "kill -TERM $PPID", extra={"sh": "/bin/sh"})
    assert "Operation not permitted" in answer["result"]["stderr"]
    assert answer["result"]["exit_code"] != 0


# --- the worker's own processes ---------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def test_worker_and_its_pool_processes_are_not_dumpable(worker_files: WorkerFiles) -> None:
    """Their /proc/<pid>/environ stays closed to every process of their uid, the commands'.

    The real console script, under Celery's prefork pool; the broker is unreachable, which
    does not keep the pool from starting."""
    env = {**worker_files.environment(), "CONVEYOR_WORKER_CONCURRENCY": "2"}
    worker = subprocess.Popen(
        as_worker([str(VENV_BIN / "conveyor-worker-cmd")]),
        env=env,
        cwd=worker_files.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(pool := children_of(worker.pid)) < 2 and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            time.sleep(0.2)
        assert len(pool) == 2
        time.sleep(1)  # let the pool processes finish their start-up hooks
        for pid in [worker.pid, *pool]:
            environ = f"/proc/{pid}/environ"
            assert os.stat(environ).st_uid == 0, f"{pid} is dumpable"  # root's: not dumpable
            reader = subprocess.run(as_worker(["cat", environ]), capture_output=True, text=True)
            assert reader.returncode != 0
            assert BROKER_SECRET not in reader.stdout
    finally:
        worker.send_signal(signal.SIGQUIT)  # cold shutdown: nothing to finish
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


# --- where the kernel cannot isolate ----------------------------------------------------


def test_weak_isolation_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_landlock = Isolation(landlock_abi=0, seccomp=True, user_namespaces=False)
    monkeypatch.setattr(cmd_job, "probe", lambda uid, gid: no_landlock)
    params = CommandParams(command="echo", args=["ran"])

    def context(**overrides: object) -> JobContext:
        settings = Settings().model_copy(update=overrides)
        return JobContext(uuid.uuid4(), settings, ArtifactStore(str(tmp_path)))

    with pytest.raises(JobFailed, match=r"Landlock is unavailable.*ALLOW_WEAK_ISOLATION=true"):
        cmd_job.run(params, context())
    assert cmd_job.run(params, context(cmd_allow_weak_isolation=True)).stdout == "ran\n"
