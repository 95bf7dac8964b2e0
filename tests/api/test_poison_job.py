"""A job whose worker process dies every time ends `failed`, with a copy dead-lettered."""

from __future__ import annotations

import os
import signal
import time

import pytest
from support.procs import pool_process_running
from support.stack import Stack, list_queues, running_stack

MAX_ATTEMPTS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("poison")
    with running_stack(
        workdir, "sqlite", workers=("cmd",), CONVEYOR_MAX_ATTEMPTS=str(MAX_ATTEMPTS)
    ) as running:
        yield running


def test_a_job_that_kills_its_worker_is_failed_after_bounded_attempts(stack: Stack):
    marker = "41.25"
    with stack.client() as client:
        job_id = stack.submit(client, "cmd.run", {"command": "sleep", "args": [marker]})["id"]
        kills = 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] == "failed":
                break
            pool_pid = pool_process_running(marker)
            if job["state"] == "running" and pool_pid is not None:
                os.kill(pool_pid, signal.SIGKILL)  # the "poison": its process dies mid-job
                kills += 1
                while pool_process_running(marker) is not None:
                    time.sleep(0.05)
            time.sleep(0.1)
        print(f"killed the pool process {kills} times; job ended {job['state']}")
        assert job["state"] == "failed", job
        assert kills == MAX_ATTEMPTS
        assert job["attempts"] == MAX_ATTEMPTS + 1  # the last delivery only records the failure
        assert "lost every time" in job["error"]

        dead_letters = "conveyor.cmd.run.dead-letter"
        deadline = time.monotonic() + 10
        while list_queues(stack.vhost)[dead_letters]["messages"] != "1":
            assert time.monotonic() < deadline, list_queues(stack.vhost)
            time.sleep(0.5)

        # Other jobs keep flowing on the same worker.
        after = stack.submit(client, "cmd.run", {"command": "echo", "args": ["still here"]})
        done = stack.wait_for(client, after["id"], {"succeeded", "failed"}, timeout=30)
        assert done["result"]["stdout"] == "still here\n"
