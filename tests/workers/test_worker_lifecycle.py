"""Worker process behaviour: probe server, one-job mode for KEDA ScaledJob pods."""

from __future__ import annotations

import os
import re
import time

import httpx
import pytest
from support.stack import Stack, free_port, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with running_stack(tmp_path_factory.mktemp("lifecycle"), "sqlite", workers=()) as running:
        yield running


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_worker_serves_healthz_and_metrics_from_its_pool_processes(stack: Stack):
    port = free_port()
    stack.start_worker("data", CONVEYOR_METRICS_PORT=str(port))
    stack.wait_for_log("data", "ready.", timeout=60)
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    with stack.client() as client:
        for _ in range(3):
            job = stack.submit(client, "data.transform", {"rows": [{"a": 1}]})
            stack.wait_for(client, job["id"], {"succeeded"})
        gateway = client.get("/metrics").text
    worker = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    # Jobs ran in pool (child) processes; the main process serves their samples.
    samples = _samples(worker)
    assert samples['conveyor_jobs_succeeded_total{type="data.transform"}'] == 3
    assert samples['conveyor_job_run_duration_seconds_count{type="data.transform"}'] == 3
    assert samples['conveyor_worker_up{type="data.transform"}'] == 1
    assert samples['conveyor_jobs_in_progress{type="data.transform"}'] == 0
    gateway_samples = _samples(gateway)
    assert gateway_samples['conveyor_jobs_submitted_total{type="data.transform"}'] == 3
    assert any(
        key.startswith('conveyor_http_requests_total{method="GET",route="/v1/jobs/{job_id}"')
        for key in gateway_samples
    ), "route label is not the template"
    # Bounded label values: no job id anywhere in either exposition.
    assert not UUID.search(worker) and not UUID.search(gateway)


def test_one_job_mode_runs_one_job_then_exits(stack: Stack):
    worker = stack.start_worker(
        "cmd", CONVEYOR_WORKER_MAX_JOBS="1", CONVEYOR_WORKER_CONCURRENCY="1"
    )
    stack.wait_for_log("cmd", "ready.", timeout=60)
    with stack.client() as client:
        first = stack.submit(client, "cmd.run", {"command": "echo", "args": ["one"]})
        second = stack.submit(client, "cmd.run", {"command": "echo", "args": ["two"]})
        assert stack.wait_for(client, first["id"], {"succeeded"})["state"] == "succeeded"
        assert worker.process.wait(timeout=30) == 0, worker.log()
        stack.retire("cmd")  # exited on purpose
        time.sleep(0.5)
        # The second job was not taken: it waits, queued, for the next pod.
        assert client.get(f"/v1/jobs/{second['id']}").json()["state"] == "queued"


def test_a_root_worker_says_so_once_without_celerys_warnings(stack: Stack):
    if os.geteuid() != 0:
        pytest.skip("only a worker started as root warns")
    stack.start_worker("data", "data-as-root")
    stack.wait_for_log("data-as-root", "ready.", timeout=60)
    log = stack.services["data-as-root"].log()
    assert "SecurityWarning" not in log
    assert log.count("running as root (the chart and images run workers as uid 10001)") == 1


def test_an_idle_worker_exits_after_its_idle_time_but_never_mid_job(stack: Stack):
    # A ScaledJob pod whose message another pod took: it must not wait for its deadline.
    idle = stack.start_worker("cmd", "cmd-idle", CONVEYOR_WORKER_IDLE_EXIT_S="2")
    stack.wait_for_log("cmd-idle", "ready.", timeout=60)
    with stack.client() as client:
        job = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["4"]})
        started = time.monotonic()
        assert idle.process.wait(timeout=30) == 0, idle.log()
        stack.retire("cmd-idle")  # exited on purpose
        assert time.monotonic() - started >= 4 + 2 - 1  # the job, then two idle seconds
        assert stack.wait_for(client, job["id"], {"succeeded", "failed"})["state"] == "succeeded"
    assert "no job for 2 s (CONVEYOR_WORKER_IDLE_EXIT_S): stopping" in idle.log()


def test_a_job_waiting_at_start_runs_once_the_pool_is_warm(stack: Stack):
    # As after KEDA's scale from zero: the job is queued before its worker exists.
    with stack.client() as client:
        job = stack.submit(client, "ml.train", {"dataset": "iris", "model": "logistic_regression"})
        worker = stack.start_worker("ml", CONVEYOR_WORKER_CONCURRENCY="2")
        try:
            stack.wait_for(client, job["id"], {"succeeded"})
        finally:
            worker.stop()
            stack.retire("ml")
    log = worker.log()
    # Consuming (Celery's "ready.") starts only once both pool processes have warmed up.
    warm = log.find("2 pool processes warm in")
    assert warm != -1, log
    assert warm < log.find("ready."), log
