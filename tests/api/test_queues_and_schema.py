"""RabbitMQ holds only Conveyor's queues; the OpenAPI schema documents every job type."""

from __future__ import annotations

import httpx
from conveyor_core.jobs import JOB_TYPES
from support.stack import Stack, list_queues, wait_until_drained

EXPECTED_QUEUES = {name for t in JOB_TYPES.values() for name in (t.queue, t.dead_letter_queue)}


def test_after_hundreds_of_jobs_only_conveyors_queues_exist(stack: Stack, client: httpx.Client):
    ids = []
    for index in range(300):
        kind = index % 3
        if kind == 0:
            ids.append(
                stack.submit(client, "cmd.run", {"command": "echo", "args": [str(index)]})["id"]
            )
        elif kind == 1:
            ids.append(client.post("/transform").json()["task_id"])
        else:
            ids.append(stack.submit(client, "data.transform", {"rows": [{"a": index}]})["id"])
    for job_id in ids:
        assert stack.wait_for(client, job_id, {"succeeded"}, timeout=180)["state"] == "succeeded"
    queues = wait_until_drained(stack.vhost)
    assert set(queues) == EXPECTED_QUEUES, f"unexpected queues: {set(queues) - EXPECTED_QUEUES}"


def test_job_queues_are_quorum_with_a_delivery_limit_and_dead_letters(stack: Stack):
    queues = list_queues(stack.vhost)
    for job_type in JOB_TYPES.values():
        arguments = queues[job_type.queue]["arguments"]
        assert "quorum" in arguments and "x-delivery-limit" in arguments
        assert "conveyor.dead-letter" in arguments
        assert "quorum" in queues[job_type.dead_letter_queue]["arguments"]


def test_openapi_documents_every_job_type_with_a_valid_example(client: httpx.Client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/jobs"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == set(JOB_TYPES)
    for name, example in examples.items():
        JOB_TYPES[name].parse_params(example["value"]["params"])  # raises if the example is stale
    schemas = spec["components"]["schemas"]
    for model in (
        "CommandParams",
        "TransformParams",
        "LogisticRegressionTrain",
        "RandomForestTrain",
        "GradientBoostingTrain",
    ):
        assert model in schemas, model
    assert client.get("/docs").status_code == 200
    types = client.get("/v1/job-types").json()
    assert {t["name"] for t in types} == set(JOB_TYPES)
