"""GET /v1/queues: each job type's queue depth and consumers, read through the gateway."""

from __future__ import annotations

import time

import pytest
from conveyor_core.jobs import CMD_RUN, DATA_TRANSFORM, JOB_TYPES, ML_TRAIN
from support.clients import api_keys
from support.stack import Stack, list_queues, rabbitmqctl, running_stack

ECHO = {"command": "echo", "args": ["hi"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # Only the ML worker: cmd.run jobs wait in their queue, which is what is counted.
    with running_stack(
        tmp_path_factory.mktemp("queues"), "sqlite", workers=("ml",), CONVEYOR_AUTH_ENABLED="true"
    ) as running:
        yield running


def test_waiting_jobs_and_consumers_are_counted_per_job_type(stack: Stack):
    admin = api_keys(stack, "create", "ops", "--admin")
    headers = {"Authorization": f"Bearer {admin}"}
    with stack.client() as http:
        for _ in range(3):
            stack.submit(http, "cmd.run", ECHO, **headers)
        deadline = time.monotonic() + 10
        while True:
            response = http.get("/v1/queues", headers=headers)
            assert response.status_code == 200, response.text
            queues = {q["job_type"]: q for q in response.json()}
            if queues["cmd.run"]["messages"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert list(queues) == list(JOB_TYPES)
    assert queues["cmd.run"] == {
        "job_type": "cmd.run",
        "queue": CMD_RUN.queue,
        "messages": 3,
        "consumers": 0,
        "dead_letter_queue": CMD_RUN.dead_letter_queue,
        "dead_letter_messages": 0,
    }
    assert (queues["ml.train"]["messages"], queues["ml.train"]["consumers"]) == (0, 1)
    # RabbitMQ's own statistics agree, once they are refreshed (every few seconds).
    deadline = time.monotonic() + 15
    while list_queues(stack.vhost)[CMD_RUN.queue]["messages"] != "3":
        assert time.monotonic() < deadline, list_queues(stack.vhost)[CMD_RUN.queue]
        time.sleep(0.5)


def test_only_admin_keys_see_queues(stack: Stack):
    user = api_keys(stack, "create", "someone")
    with stack.client() as http:
        refused = http.get("/v1/queues", headers={"Authorization": f"Bearer {user}"})
        anonymous = http.get("/v1/queues")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "queue status needs an admin key"}
    assert anonymous.status_code == 401


def test_a_missing_queue_is_reported_and_publishing_is_unaffected(stack: Stack):
    # A passive declare of a missing queue closes its channel: never the publishing one.
    rabbitmqctl("delete_queue", "-p", stack.vhost, DATA_TRANSFORM.dead_letter_queue)
    admin = api_keys(stack, "create", "ops2", "--admin")
    headers = {"Authorization": f"Bearer {admin}"}
    with stack.client() as http:
        queues = {q["job_type"]: q for q in http.get("/v1/queues", headers=headers).json()}
        assert queues["data.transform"]["dead_letter_messages"] is None
        assert queues["data.transform"]["messages"] == 0
        job = stack.submit(http, "ml.train", {"model": "logistic_regression"}, **headers)
        deadline = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job['id']}", headers=headers).json()["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert http.get("/v1/queues", headers=headers).status_code == 200
    assert ML_TRAIN.queue in list_queues(stack.vhost)
