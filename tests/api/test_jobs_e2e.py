"""Each job type end to end through the real gateway, RabbitMQ, workers and job store."""

from __future__ import annotations

import io
import time
import uuid

import httpx
import polars as pl
import pytest
from conveyor_core.api_models import JobView
from support.procs import sleep_processes
from support.stack import Stack

TERMINAL = {"succeeded", "failed", "cancelled"}


def test_ml_train_reports_progress_and_produces_a_model(stack: Stack, client: httpx.Client):
    accepted = stack.submit(client, "ml.train", {"dataset": "iris", "model": "logistic_regression"})
    assert accepted["state"] == "queued"
    job = stack.wait_for(client, accepted["id"], TERMINAL)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["accuracy"] >= 0.9
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert job["started_at"] <= job["finished_at"]
    assert job["artifacts"] == ["model.skops"]
    model = client.get(f"/v1/jobs/{job['id']}/artifacts/model.skops")
    assert model.status_code == 200 and len(model.content) > 1000


def test_progress_is_visible_while_a_long_training_runs(stack: Stack, client: httpx.Client):
    accepted = stack.submit(
        client,
        "ml.train",
        {
            "dataset": "synthetic",
            "n_samples": 4000,
            "n_features": 30,
            "model": "random_forest",
            "hyperparameters": {"n_estimators": 400},
            "cv_folds": 3,
        },
    )
    seen: list[float] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{accepted['id']}").json()
        if job["state"] == "running":
            seen.append(job["progress"])
        if job["state"] in TERMINAL:
            break
        time.sleep(0.1)
    assert job["state"] == "succeeded", job["error"]
    intermediate = {p for p in seen if 0 < p < 1}
    assert len(intermediate) >= 3, f"progress seen while running: {seen}"
    assert seen == sorted(seen), "progress went backwards"
    assert len(job["result"]["cv_scores"]) == 3


def test_cmd_run_passes_args_literally(stack: Stack, client: httpx.Client):
    accepted = stack.submit(
        client, "cmd.run", {"command": "echo", "args": ["hello", "$(id)", ";ls"]}
    )
    job = stack.wait_for(client, accepted["id"], TERMINAL)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["stdout"] == "hello $(id) ;ls\n"
    assert job["result"]["exit_code"] == 0 and job["result"]["truncated"] is False


def test_cmd_run_with_stdin(stack: Stack, client: httpx.Client):
    accepted = stack.submit(client, "cmd.run", {"command": "sha256sum", "stdin": "conveyor"})
    job = stack.wait_for(client, accepted["id"], TERMINAL)
    import hashlib

    assert job["result"]["stdout"].split()[0] == hashlib.sha256(b"conveyor").hexdigest()


def test_data_transform_inline(stack: Stack, client: httpx.Client):
    accepted = stack.submit(
        client,
        "data.transform",
        {
            "rows": [
                {"city": "Oslo", "value": 10},
                {"city": "Oslo", "value": 20},
                {"city": "Lima", "value": 30},
                {"city": "Lima", "value": 1},
            ],
            "steps": [
                {"op": "filter", "column": "value", "cmp": "ge", "value": 10},
                {
                    "op": "compute",
                    "column": "double",
                    "left": "value",
                    "operator": "mul",
                    "right": 2,
                },
                {
                    "op": "aggregate",
                    "group_by": ["city"],
                    "aggregations": [
                        {"column": "double", "func": "sum"},
                        {"column": "value", "func": "count", "alias": "n"},
                    ],
                },
                {"op": "sort", "by": ["city"]},
            ],
        },
    )
    job = stack.wait_for(client, accepted["id"], TERMINAL)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["rows"] == [
        {"city": "Lima", "double_sum": 60, "n": 1},
        {"city": "Oslo", "double_sum": 60, "n": 2},
    ]


def test_data_transform_large_output_becomes_a_parquet_artifact(stack: Stack, client: httpx.Client):
    rows = [{"i": i, "group": i % 7} for i in range(5000)]
    accepted = stack.submit(
        client,
        "data.transform",
        {
            "rows": rows,
            "steps": [{"op": "compute", "column": "j", "left": "i", "operator": "add", "right": 1}],
        },
    )
    job = stack.wait_for(client, accepted["id"], TERMINAL)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["rows"] is None and job["result"]["row_count"] == 5000
    download = client.get(f"/v1/jobs/{job['id']}/artifacts/{job['result']['artifact']}")
    frame = pl.read_parquet(io.BytesIO(download.content))
    assert frame["j"].to_list() == list(range(1, 5001))


def test_uploaded_files_feed_data_and_ml_jobs(stack: Stack, client: httpx.Client):
    rows = ["f1,f2,target"] + [f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}" for i in range(200)]
    stored = client.put("/v1/files/points.csv", content="\n".join(rows).encode())
    assert stored.status_code == 201
    source = stored.json()["path"]
    transform = stack.submit(
        client,
        "data.transform",
        {
            "source": source,
            "steps": [
                {
                    "op": "aggregate",
                    "group_by": ["target"],
                    "aggregations": [{"column": "f1", "func": "count", "alias": "n"}],
                },
                {"op": "sort", "by": ["target"]},
            ],
        },
    )
    train = stack.submit(
        client, "ml.train", {"dataset": "file", "source": source, "model": "random_forest"}
    )
    counted = stack.wait_for(client, transform["id"], TERMINAL)
    assert counted["state"] == "succeeded", counted["error"]
    assert counted["result"]["rows"] == [{"target": 0, "n": 116}, {"target": 1, "n": 84}]
    trained = stack.wait_for(client, train["id"], TERMINAL)
    assert trained["state"] == "succeeded", trained["error"]
    assert trained["result"]["accuracy"] > 0.9  # the target is a function of f1


def test_data_transform_unknown_column_is_refused_before_queueing(
    stack: Stack, client: httpx.Client
):
    response = client.post(
        "/v1/jobs",
        json={
            "type": "data.transform",
            "params": {"rows": [{"value": 1}], "steps": [{"op": "select", "columns": ["valeu"]}]},
        },
    )
    assert response.status_code == 422
    assert "valeu" in response.text


def test_list_is_newest_first_with_keyset_pagination(stack: Stack, client: httpx.Client):
    ids = [stack.submit(client, "cmd.run", {"command": "date"})["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"type": "cmd.run", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:5] == list(reversed(ids))
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert client.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 422
    finished = client.get("/v1/jobs", params={"state": "succeeded", "type": "cmd.run"}).json()
    assert all(item["state"] == "succeeded" for item in finished["items"])


def test_accepted_and_status_answers_keep_their_shape(client: httpx.Client):
    # Both routes serialise their model themselves (routes/jobs.py json_response).
    body = {"type": "cmd.run", "params": {"command": "echo", "args": ["shape"]}}
    accepted = client.post("/v1/jobs", json=body)
    assert accepted.status_code == 202
    assert accepted.headers["content-type"] == "application/json"
    assert "Idempotent-Replayed" not in accepted.headers
    job = accepted.json()
    assert set(job) == {"id", "type", "state", "created_at"}
    assert accepted.headers["Location"] == f"/v1/jobs/{job['id']}"
    status = client.get(accepted.headers["Location"])
    assert status.status_code == 200
    assert status.headers["content-type"] == "application/json"
    assert set(status.json()) == set(JobView.model_fields)
    assert status.json()["params"]["args"] == ["shape"]


def test_idempotent_resubmission_returns_the_same_job(stack: Stack, client: httpx.Client):
    key = str(uuid.uuid4())
    body = {"type": "cmd.run", "params": {"command": "echo", "args": ["once"]}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    second = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    other = {"type": "cmd.run", "params": {"command": "echo", "args": ["twice"]}}
    conflict = client.post("/v1/jobs", json=other, headers={"Idempotency-Key": key})
    assert conflict.status_code == 409
    echoes = client.get("/v1/jobs", params={"type": "cmd.run", "limit": 500}).json()["items"]
    assert sum(1 for job in echoes if job["params"]["args"] == ["once"]) == 1


def test_cancel_a_queued_job_it_never_starts(stack: Stack, client: httpx.Client):
    # The cmd worker runs two jobs at a time: two sleeps keep it busy, the third waits.
    blockers = [
        stack.submit(client, "cmd.run", {"command": "sleep", "args": ["3"]})["id"] for _ in range(2)
    ]
    for blocker in blockers:
        stack.wait_for(client, blocker, {"running"}, timeout=30)
    waiting = stack.submit(client, "cmd.run", {"command": "echo", "args": ["never"]})["id"]
    response = client.post(f"/v1/jobs/{waiting}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    for blocker in blockers:
        stack.wait_for(client, blocker, {"succeeded"}, timeout=30)
    time.sleep(1)  # the worker has now consumed the cancelled job's message
    job = client.get(f"/v1/jobs/{waiting}").json()
    assert job["state"] == "cancelled" and job["started_at"] is None and job["result"] is None
    assert client.post(f"/v1/jobs/{waiting}/cancel").status_code == 409


def test_cancel_a_running_command_stops_its_process(stack: Stack, client: httpx.Client):
    marker = "37.5"  # an unusual duration, to find this very process in /proc
    job_id = stack.submit(
        client, "cmd.run", {"command": "sleep", "args": [marker], "timeout_s": 60}
    )["id"]
    stack.wait_for(client, job_id, {"running"}, timeout=30)
    deadline = time.monotonic() + 10
    while not sleep_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleep_processes(marker), "the sleep command never started"
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    job = stack.wait_for(client, job_id, TERMINAL, timeout=15)
    assert job["state"] == "cancelled"
    assert sleep_processes(marker) == []


def test_cancel_a_running_training_ends_cancelled(stack: Stack, client: httpx.Client):
    job_id = stack.submit(
        client,
        "ml.train",
        {
            "dataset": "synthetic",
            "n_samples": 20000,
            "n_features": 40,
            "model": "gradient_boosting",
            "hyperparameters": {"n_estimators": 2000},
        },
    )["id"]
    stack.wait_for(client, job_id, {"running"}, timeout=30)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = stack.wait_for(client, job_id, TERMINAL, timeout=20)
    assert job["state"] == "cancelled"
    assert job["result"] is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/v1/jobs/{uuid.uuid4()}", 404),
        ("/v1/jobs/not-a-uuid", 422),
        (f"/v1/jobs/{uuid.uuid4()}/artifacts/model.skops", 404),
        (f"/status/{uuid.uuid4()}", 404),
        (f"/result/{uuid.uuid4()}", 404),
    ],
)
def test_unknown_and_malformed_ids(client: httpx.Client, path: str, expected: int):
    assert client.get(path).status_code == expected


def test_cancel_unknown_job_is_404(client: httpx.Client):
    assert client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_bad_params_name_the_field_and_queue_nothing(stack: Stack, client: httpx.Client):
    before = client.get("/v1/jobs", params={"limit": 500}).json()["items"]
    response = client.post(
        "/v1/jobs",
        json={
            "type": "ml.train",
            "params": {
                "dataset": "iris",
                "model": "random_forest",
                "hyperparameters": {"n_estimators": -3},
            },
        },
    )
    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[-2:] == ["hyperparameters", "n_estimators"] for loc in locations), locations
    unknown_type = client.post("/v1/jobs", json={"type": "video.render", "params": {}})
    assert unknown_type.status_code == 422
    assert client.get("/v1/jobs", params={"limit": 500}).json()["items"] == before


def test_command_outside_the_catalog_is_forbidden(client: httpx.Client):
    response = client.post(
        "/v1/jobs", json={"type": "cmd.run", "params": {"command": "rm", "args": ["-rf", "/"]}}
    )
    assert response.status_code == 403
    assert "not in the command catalog" in response.json()["detail"]


def test_artifact_names_cannot_traverse(stack: Stack, client: httpx.Client):
    job_id = stack.submit(client, "cmd.run", {"command": "date"})["id"]
    stack.wait_for(client, job_id, TERMINAL)
    # Encoded, so the client sends them as they are instead of normalising the URL.
    for name in ("..%2F..%2Fconveyor.db", "%2E%2E", ".hidden", "model.skops%00"):
        assert client.get(f"/v1/jobs/{job_id}/artifacts/{name}").status_code in (404, 422)


def test_oversized_body_is_refused(client: httpx.Client):
    huge = {"type": "cmd.run", "params": {"command": "echo", "args": ["x" * 4000] * 3000}}
    assert client.post("/v1/jobs", json=huge).status_code == 413


def test_a_typo_in_a_discriminating_field_names_the_field_its_values_and_the_typo(
    client: httpx.Client,
):
    typo = {"type": "ml.train", "params": {"dataset": "iris", "modle": "logistic_regression"}}
    response = client.post("/v1/jobs", json=typo)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "ml.train", "params", "model"]
    assert error["msg"] == (
        "Field required: `model`, one of gradient_boosting, logistic_regression, "
        "random_forest; unknown field(s): modle"
    )
    no_type = client.post("/v1/jobs", json={"typ": "ml.train", "params": {}}).json()["detail"]
    assert no_type[0]["loc"] == ["body", "type"]
    assert "one of cmd.run, data.transform, ml.train; unknown field(s): typ" in no_type[0]["msg"]
