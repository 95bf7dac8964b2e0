"""Workers killed or stopped mid-job: nothing accepted is lost, nothing runs twice.

Each test prints what it did and what it counted, so a CI log shows the guarantee at work.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support.procs import alive, children
from support.stack import Service, Stack, list_queues, running_stack


@pytest.fixture
def stack(tmp_path):
    with running_stack(tmp_path, "sqlite", workers=("cmd",)) as running:
        yield running


def _runs_started(services: list[Service], job_id: str) -> int:
    return sum(service.log().count(f"job {job_id} (cmd.run) started") for service in services)


def test_sigkill_of_a_worker_mid_job_redelivers_it_and_it_succeeds_once(stack: Stack):
    with stack.client() as client:
        job_id = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["3.5"]})["id"]
        stack.wait_for(client, job_id, {"running"}, timeout=30)
        worker = stack.services["cmd"].process
        pool = children(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        time.sleep(1)
        assert not [pid for pid in pool if alive(pid)], "pool processes outlived their worker"
        killed = stack.retire("cmd")
        replacement = stack.start_worker("cmd", name="cmd-replacement")  # as Kubernetes would
        job = stack.wait_for(client, job_id, {"succeeded", "failed"}, timeout=60)
    runs = _runs_started([killed, replacement], job_id)
    print(
        f"killed worker {worker.pid} mid-job; job ended {job['state']} after "
        f"{job['attempts']} attempts; runs started: {runs}"
    )
    assert runs == 2
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert job["result"]["exit_code"] == 0 and job["result"]["timed_out"] is False


def test_sigterm_lets_the_running_job_finish_and_nothing_is_redelivered(stack: Stack):
    with stack.client() as client:
        job_id = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["3"]})["id"]
        stack.wait_for(client, job_id, {"running"}, timeout=30)
        worker = stack.services["cmd"].process
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # what Kubernetes sends first
        code = worker.wait(timeout=30)
        took = time.monotonic() - signalled
        job = client.get(f"/v1/jobs/{job_id}").json()
        print(
            f"SIGTERM mid-job: worker exited {code} after {took:.1f}s; job {job['state']}, "
            f"attempts {job['attempts']}"
        )
        assert job["state"] == "succeeded" and job["attempts"] == 1
        assert code == 0
        stopped = stack.retire("cmd")
        replacement = stack.start_worker("cmd", name="cmd-replacement")
        stack.wait_for_log("cmd-replacement", "ready.", timeout=60)
        time.sleep(2)
        queues = list_queues(stack.vhost)
    assert queues["conveyor.cmd.run"]["messages"] == "0"
    assert _runs_started([stopped, replacement], job_id) == 1, "the finished job ran again"


def test_a_job_past_its_hard_time_limit_is_killed_and_failed_once(tmp_path):
    limits = {"CONVEYOR_SOFT_TIME_LIMIT_S": "1", "CONVEYOR_TIME_LIMIT_S": "3"}
    with running_stack(tmp_path, "sqlite", workers=()) as stack:
        argv = [sys.executable, str(Path(__file__).with_name("stuck_worker.py"))]
        stack.start_service("cmd", argv, **limits)
        stack.wait_ready()
        with stack.client() as client:
            job_id = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["30"]})["id"]
            job = stack.wait_for(client, job_id, {"succeeded", "failed"}, timeout=30)
        log = stack.services["cmd"].log()
    print(f"job ended {job['state']} after {job['attempts']} attempt(s): {job['error']}")
    assert "Hard time limit (3s) exceeded" in log
    assert job["state"] == "failed" and job["attempts"] == 1
    assert job["error"].startswith("hard time limit of 3 s exceeded"), job["error"]
