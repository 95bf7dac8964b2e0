"""CONVEYOR_MAX_RUNNING_PER_KEY: one key's backlog cannot hold every worker of a type.

Each type's queue is first in, first out. Without a per-key limit, a key that queues many
long jobs takes every pool process, and another key's job waits until they finish. With
it, the key's jobs over the limit go to the back of the queue and the other key's job runs
on the free process.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from support.clients import api_keys
from support.stack import running_stack

HOG_JOBS = 4
HOG_SLEEP_S = 6


def submit(client: httpx.Client, args: list[str]) -> str:
    response = client.post(
        "/v1/jobs", json={"type": "cmd.run", "params": {"command": "sleep", "args": args}}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_key_at_its_running_limit_leaves_the_other_workers_to_other_keys(tmp_path: Path):
    with running_stack(
        tmp_path,
        "postgres",
        workers=("cmd",),
        CONVEYOR_AUTH_ENABLED="true",
        CONVEYOR_WORKER_CONCURRENCY="2",
        CONVEYOR_MAX_RUNNING_PER_KEY="1",
    ) as stack:
        hog = stack.client(api_key=api_keys(stack, "create", "hog"))
        polite = stack.client(api_key=api_keys(stack, "create", "polite"))
        admin = stack.client(api_key=api_keys(stack, "create", "ops", "--admin"))
        hog_jobs = [submit(hog, [str(HOG_SLEEP_S)]) for _ in range(HOG_JOBS)]
        time.sleep(1)  # the hog's backlog is in the queue first
        polite_job = submit(polite, ["0.1"])

        most_running, polite_done_after_hogs = 0, None
        deadline = time.monotonic() + HOG_JOBS * HOG_SLEEP_S + 60
        while True:
            states = {
                job_id: admin.get(f"/v1/jobs/{job_id}").json() for job_id in [*hog_jobs, polite_job]
            }
            running = sum(states[job_id]["state"] == "running" for job_id in hog_jobs)
            most_running = max(most_running, running)
            finished = [job_id for job_id in hog_jobs if states[job_id]["state"] == "succeeded"]
            if polite_done_after_hogs is None and states[polite_job]["state"] == "succeeded":
                polite_done_after_hogs = len(finished)
            if all(states[job_id]["state"] in {"succeeded", "failed"} for job_id in hog_jobs):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
        deferred = stack.services["cmd"].log().count("CONVEYOR_MAX_RUNNING_PER_KEY; to the back")
        for client in (hog, polite, admin):
            client.close()

    print(f"hog jobs running at once: at most {most_running}; deferred {deferred} times")
    assert most_running == 1
    assert polite_done_after_hogs == 0  # ran beside the hog's first job, not after it
    assert all(states[job_id]["state"] == "succeeded" for job_id in hog_jobs), states
    assert all(states[job_id]["attempts"] == 1 for job_id in hog_jobs), states
    assert deferred > 0
