"""PostgreSQL restarted while workers update job state: no job is lost or stuck running.

This restarts the machine's real PostgreSQL cluster, so it affects anything else using it
at that moment: CI runs tests one at a time.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conveyor_core.jobs.base import QUEUE_DELIVERY_LIMIT
from support.proxy import CuttableProxy
from support.stack import Stack, list_queues, running_stack


@pytest.fixture
def stack(tmp_path):
    with running_stack(
        tmp_path, "postgres", workers=("cmd",), CONVEYOR_HEARTBEAT_INTERVAL_S="0.3"
    ) as running:
        yield running


def _restart_postgres() -> float:
    version = next(Path("/etc/postgresql").iterdir()).name
    started = time.monotonic()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=120,
    )
    return time.monotonic() - started


def test_jobs_running_through_a_job_store_restart_all_finish(stack: Stack):
    with stack.client() as client:
        ids = [
            stack.submit(client, "cmd.run", {"command": "sleep", "args": ["2"]})["id"]
            for _ in range(6)
        ]
        stack.wait_for(client, ids[0], {"running"}, timeout=30)
        took = _restart_postgres()
        deadline = time.monotonic() + 60
        while True:  # the gateway's own pool reconnects (pool_pre_ping)
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "gateway never saw the store again"
            time.sleep(0.5)
        jobs = [
            stack.wait_for(client, job_id, {"succeeded", "failed"}, timeout=120) for job_id in ids
        ]
    states = [job["state"] for job in jobs]
    print(
        f"PostgreSQL restarted in {took:.1f}s while {len(ids)} jobs ran or waited; "
        f"outcomes: {states}; attempts: {[job['attempts'] for job in jobs]}"
    )
    assert states == ["succeeded"] * len(ids)


def test_a_job_queued_through_a_store_outage_longer_than_the_delivery_limit_runs(tmp_path):
    """The worker cannot reach the job store for more deliveries than the queue allows.

    Returned with requeue, each delivery counted towards the quorum queue's limit of 20,
    then RabbitMQ dead-lettered the message and the job sat `queued` forever. Handed back
    as a fresh message instead, it runs once the store answers again.
    """
    proxy = CuttableProxy("127.0.0.1", 5432)
    try:
        with running_stack(tmp_path, "postgres", workers=()) as stack:
            database = stack.env["CONVEYOR_DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
            proxy.cut()
            stack.start_worker("cmd", CONVEYOR_DATABASE_URL=database, CONVEYOR_STORE_RETRY_S="0")
            with stack.client() as client:
                job = stack.submit(client, "cmd.run", {"command": "echo", "args": ["late"]})
                log = stack.services["cmd"]
                deadline = time.monotonic() + 60
                while log.log().count("handing the job back") <= QUEUE_DELIVERY_LIMIT:
                    assert time.monotonic() < deadline, log.log()[-3000:]
                    time.sleep(0.2)
                dead_letters = list_queues(stack.vhost)["conveyor.cmd.run.dead-letter"]
                assert dead_letters["messages"] == "0"
                proxy.restore()
                done = stack.wait_for(client, job["id"], {"succeeded", "failed"}, timeout=60)
        assert (done["state"], done["attempts"]) == ("succeeded", 1)
    finally:
        proxy.close()
