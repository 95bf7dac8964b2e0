"""A worker cut off from RabbitMQ on one side only: its redelivered job runs, not fails.

RabbitMQ sees the worker's connection end and redelivers the job's message at once; the
worker hears nothing until its AMQP heartbeats go unanswered, and only then stops the
job. The redelivery used to wait a few of the job's heartbeats for the old run to go
silent, then give up and ack, so the job sat `running` until the reaper failed it.
"""

from __future__ import annotations

from support.proxy import CuttableProxy
from support.stack import RABBITMQ_HOST, running_stack

BROKER_HEARTBEAT_S = "3"  # the cut-off worker notices within about 10 s


def test_a_job_redelivered_during_a_one_sided_disconnect_is_taken_over_and_runs(tmp_path):
    proxy = CuttableProxy(RABBITMQ_HOST, 5672)
    try:
        with running_stack(
            tmp_path,
            "sqlite",
            workers=(),
            CONVEYOR_BROKER_HEARTBEAT_S=BROKER_HEARTBEAT_S,
            CONVEYOR_STALE_JOB_AFTER_S="30",
        ) as stack:
            direct = stack.env["CONVEYOR_BROKER_URL"]
            proxied = direct.replace(":5672/", f":{proxy.port}/")
            stack.start_worker("cmd", "cmd-cut-off", CONVEYOR_BROKER_URL=proxied)
            stack.wait_ready()
            with stack.client() as client:
                job = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["25"]})
                stack.wait_for(client, job["id"], {"running"}, timeout=30)
                stack.start_worker("cmd", "cmd-healthy", CONVEYOR_BROKER_URL=direct)
                stack.wait_for_log("cmd-healthy", "ready.", timeout=60)
                proxy.half_open()
                done = stack.wait_for(client, job["id"], {"succeeded", "failed"}, timeout=120)
            cut_off, healthy = (
                stack.services["cmd-cut-off"].log(),
                stack.services["cmd-healthy"].log(),
            )
        assert done["state"] == "succeeded", (done, healthy[-3000:])
        assert done["attempts"] == 2  # the cut-off run was stopped, the redelivery ran it
        assert f"job {job['id']} (cmd.run) started" in healthy
        assert f"job {job['id']} (cmd.run) succeeded" not in cut_off
    finally:
        proxy.close()
