"""Guarantee 4: jobs longer than RabbitMQ's consumer_timeout.

RabbitMQ closes a channel that holds a delivery unacked for longer than `consumer_timeout`
(PRECONDITION_FAILED) and redelivers the message, so a plain acks-late worker runs a long
job again and again. Conveyor acks the message once the job has run for
CONVEYOR_ACK_HANDOVER_AFTER_S and lets the job's heartbeat be its lease from then on.

The tests lower the broker's consumer_timeout to a few seconds. RabbitMQ 3.10 reads it when
a channel opens, so it is lowered only while the test's worker connects; the interval at
which it is checked (channel_tick_interval, 60 s) is read live and stays low for the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import amqp
import pytest
from support.stack import Service, Stack, list_queues, rabbitmqctl, running_stack

CONSUMER_TIMEOUT_MS = 4000
LONG_JOB_S = 9  # more than twice the lowered consumer_timeout
TIMED_OUT = "PRECONDITION_FAILED"


def _set_broker(key: str, value: int) -> None:
    rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


def _broker_value(key: str) -> int:
    answer = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).")  # "{ok,1800000}"
    return int(answer.strip().strip("{}").split(",")[1])


@contextlib.contextmanager
def fast_consumer_timeout_checks() -> Iterator[None]:
    previous = _broker_value("channel_tick_interval")
    _set_broker("channel_tick_interval", 500)
    try:
        yield
    finally:
        _set_broker("channel_tick_interval", previous)


def start_worker_with_short_consumer_timeout(stack: Stack, name: str, **env: str) -> Service:
    previous = _broker_value("consumer_timeout")
    _set_broker("consumer_timeout", CONSUMER_TIMEOUT_MS)
    try:
        worker = stack.start_worker("cmd", name=name, CONVEYOR_WORKER_CONCURRENCY="1", **env)
        stack.wait_for_log(name, "ready.", timeout=60)
    finally:
        _set_broker("consumer_timeout", previous)
    return worker


@pytest.fixture
def stack(tmp_path):
    with (
        fast_consumer_timeout_checks(),
        running_stack(
            tmp_path,
            "sqlite",
            workers=(),
            CONVEYOR_STALE_JOB_AFTER_S="3",
            CONVEYOR_MAINTENANCE_INTERVAL_S="0.5",
        ) as running,
    ):
        yield running


def ready_messages(vhost: str, queue: str) -> int:
    """Read live from the queue (rabbitmqctl's counts lag by the stats interval)."""
    with amqp.Connection("127.0.0.1:5672", virtual_host=vhost) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).message_count)


def _runs_started(worker: Service, job_id: str) -> int:
    return worker.log().count(f"job {job_id} (cmd.run) started")


def _sleep_job(stack: Stack, client, seconds: float) -> str:
    job: dict[str, str] = stack.submit(
        client, "cmd.run", {"command": "sleep", "args": [str(seconds)], "timeout_s": 60}
    )
    return job["id"]


@pytest.mark.timeout(120)
def test_jobs_longer_than_consumer_timeout_keep_their_channel_and_run_once(stack: Stack):
    worker = start_worker_with_short_consumer_timeout(
        stack, "cmd-handover", CONVEYOR_ACK_HANDOVER_AFTER_S="1"
    )
    with stack.client() as client:
        # Two long jobs on one pool process: the second must not wait, unacked, behind the
        # first once the first's message is acked (it would time out in turn).
        first, second = _sleep_job(stack, client, LONG_JOB_S), _sleep_job(stack, client, LONG_JOB_S)
        jobs = [
            stack.wait_for(client, job_id, {"succeeded", "failed"}, 60)
            for job_id in (first, second)
        ]
    log = worker.log()
    print(
        f"consumer_timeout {CONSUMER_TIMEOUT_MS} ms, two {LONG_JOB_S} s jobs on one process: "
        f"{[(job['state'], job['attempts']) for job in jobs]}; runs started "
        f"{[_runs_started(worker, job_id) for job_id in (first, second)]}; "
        f"channel timeouts in the log: {log.count(TIMED_OUT)}"
    )
    for job in jobs:
        assert job["state"] == "succeeded", job["error"]
        assert job["attempts"] == 1
    assert [_runs_started(worker, job_id) for job_id in (first, second)] == [1, 1]
    assert TIMED_OUT not in log
    assert log.count("handed over (message acked") == 2
    assert "pausing conveyor.cmd.run" in log and "resuming conveyor.cmd.run" in log
    assert list_queues(stack.vhost)["conveyor.cmd.run"]["messages"] == "0"


@pytest.mark.timeout(120)
def test_without_the_hand_over_the_broker_takes_the_long_job_back(stack: Stack):
    """The control: proves the lowered consumer_timeout is in force for these tests, and
    shows what the hand-over prevents: Celery treats the closed channel as unrecoverable
    and stops, and RabbitMQ puts the message of a job that is still running back."""
    worker = start_worker_with_short_consumer_timeout(
        stack, "cmd-plain", CONVEYOR_ACK_HANDOVER_AFTER_S="0"
    )
    with stack.client() as client:
        job_id = _sleep_job(stack, client, LONG_JOB_S)
        stack.wait_for_log("cmd-plain", TIMED_OUT, timeout=30)
        code = worker.process.wait(timeout=30)
        stack.retire("cmd-plain")
        job = client.get(f"/v1/jobs/{job_id}").json()
    queue = list_queues(stack.vhost)["conveyor.cmd.run"]
    print(
        f"hand-over off: channel closed with {TIMED_OUT}, worker exited {code}; job "
        f"{job['state']}; messages back in the queue: {queue['messages']}"
    )
    assert "Unrecoverable error" in worker.log()
    assert queue["messages"] == "1", "the broker kept the timed-out delivery"


@pytest.mark.timeout(120)
def test_a_handed_over_job_whose_worker_is_killed_is_queued_again_and_succeeds(stack: Stack):
    worker = stack.start_worker("cmd", CONVEYOR_ACK_HANDOVER_AFTER_S="1")
    stack.wait_for_log("cmd", "ready.", timeout=60)
    with stack.client() as client:
        job_id = _sleep_job(stack, client, 4)
        stack.wait_for_log("cmd", f"job {job_id} has run", timeout=30)
        time.sleep(1)  # the ack leaves on the worker's next event loop turn
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        killed = stack.retire("cmd")
        left_in_queue = ready_messages(stack.vhost, "conveyor.cmd.run")
        replacement = stack.start_worker("cmd", name="cmd-replacement")
        job = stack.wait_for(client, job_id, {"succeeded", "failed"}, 60)
    runs = _runs_started(killed, job_id) + _runs_started(replacement, job_id)
    print(
        f"killed the worker after the hand-over; messages left in the queue: {left_in_queue}; "
        f"job {job['state']} after {job['attempts']} attempts, {runs} runs started"
    )
    assert left_in_queue == 0, "the message should have been acked at the hand-over"
    assert "queued again 1 handed-over job" in stack.services["api"].log()
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and runs == 2
