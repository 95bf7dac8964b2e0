"""RabbitMQ restarted while jobs are submitted continuously: every 202 ends succeeded.

This restarts the machine's real RabbitMQ application (`rabbitmqctl stop_app`/`start_app`),
so it affects anything else using the broker at that moment: CI runs tests one at a time.
"""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
from support.stack import Stack, running_stack

SUBMIT_SECONDS = 25
OUTAGE_AFTER_S = 5


@pytest.fixture
def stack(tmp_path):
    with running_stack(
        tmp_path, "postgres", workers=("cmd",), CONVEYOR_SUBMIT_RATE_PER_S="0"
    ) as running:
        yield running


def _restart_rabbitmq() -> float:
    started = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    time.sleep(3)  # an outage long enough for several submissions to hit it
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)
    return time.monotonic() - started


def test_every_accepted_job_survives_a_broker_restart(stack: Stack):
    accepted: list[str] = []
    refused: list[float] = []
    other: list[int] = []
    stop = threading.Event()

    def submit_continuously() -> None:
        with stack.client() as client:
            index = 0
            while not stop.is_set():
                index += 1
                started = time.monotonic()
                try:
                    response = client.post(
                        "/v1/jobs",
                        json={
                            "type": "cmd.run",
                            "params": {"command": "echo", "args": [str(index)]},
                        },
                        timeout=10,
                    )
                except httpx.HTTPError:
                    other.append(-1)
                    continue
                if response.status_code == 202:
                    accepted.append(response.json()["id"])
                elif response.status_code == 503:
                    refused.append(time.monotonic() - started)
                else:
                    other.append(response.status_code)
                time.sleep(0.05)

    submitter = threading.Thread(target=submit_continuously)
    submitter.start()
    try:
        time.sleep(OUTAGE_AFTER_S)
        outage = _restart_rabbitmq()
        time.sleep(SUBMIT_SECONDS - OUTAGE_AFTER_S)
    finally:
        stop.set()
        submitter.join(timeout=30)

    with stack.client() as client:
        states = {
            job_id: stack.wait_for(client, job_id, {"succeeded", "failed"}, timeout=180)
            for job_id in accepted
        }
    succeeded = sum(1 for job in states.values() if job["state"] == "succeeded")
    print(
        f"broker down and up again in {outage:.1f}s; {len(accepted)} submissions accepted, "
        f"{len(refused)} refused with 503 (slowest {max(refused, default=0):.2f}s), "
        f"{len(other)} other answers; {succeeded}/{len(accepted)} accepted jobs succeeded"
    )
    assert refused, "no submission hit the outage: the test proved nothing"
    assert max(refused) < 2.0
    assert other == []
    assert succeeded == len(accepted), [j for j in states.values() if j["state"] != "succeeded"]
