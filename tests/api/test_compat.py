"""The blog pattern's endpoints give the blog's answers, minus its defects."""

from __future__ import annotations

import time
from typing import Any

import httpx
from support.stack import Stack


def _result(client: httpx.Client, task_id: str, timeout: float = 60) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/status/{task_id}").json()["status"]
        if status in ("SUCCESS", "FAILURE", "REVOKED"):
            return status, client.get(f"/result/{task_id}").json()["result"]
        assert status in ("PENDING", "STARTED")
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never finished")


def test_transform_without_body_doubles_the_sample(client: httpx.Client):
    task_id = client.post("/transform").json()["task_id"]
    assert _result(client, task_id) == ("SUCCESS", [20, 40, 60])


def test_transform_with_a_list_body(client: httpx.Client):
    task_id = client.post("/transform", json=[{"value": 1}, {"value": 2.5}]).json()["task_id"]
    assert _result(client, task_id) == ("SUCCESS", [2, 5.0])
    assert client.post("/transform", json=[{"nope": 1}]).status_code == 422


def test_train(client: httpx.Client):
    task_id = client.post("/train").json()["task_id"]
    status, result = _result(client, task_id)
    assert status == "SUCCESS" and result["accuracy"] >= 0.9


def test_execute_runs_catalog_commands_without_a_shell(client: httpx.Client):
    task_id = client.post("/execute", params={"command": "echo 'hello world' $HOME"}).json()[
        "task_id"
    ]
    assert _result(client, task_id) == ("SUCCESS", "hello world $HOME\n")


def test_execute_refuses_anything_else_and_runs_nothing(stack: Stack, client: httpx.Client):
    before = client.get("/v1/jobs", params={"limit": 500}).json()["items"]
    for command in ("id;cat /etc/passwd", "cat /etc/passwd", "rm -rf /", "/bin/echo hi"):
        response = client.post("/execute", params={"command": command})
        assert response.status_code == 403, command
        assert "not allowed" in response.json()["detail"]
    assert client.post("/execute", params={"command": "echo 'unbalanced"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 500}).json()["items"] == before


def test_status_of_a_pending_task(stack: Stack, client: httpx.Client):
    task_id = client.post("/execute", params={"command": "sleep 1"}).json()["task_id"]
    assert client.get(f"/status/{task_id}").json()["status"] in ("PENDING", "STARTED")
    assert _result(client, task_id)[0] == "SUCCESS"
