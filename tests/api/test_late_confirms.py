"""Publisher confirms that come late: RabbitMQ has the message, the gateway has timed out.

The gateway reaches RabbitMQ through a proxy that can hold back the broker's replies, so
the publish reaches the queue while its confirm does not reach the gateway in time. The
cmd worker connects directly and claims what reaches its queue; nothing consumes ml.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.proxy import CuttableProxy
from support.stack import RABBITMQ_HOST, Stack, base_env, rabbitmq_vhost

ECHO = {"type": "cmd.run", "params": {"command": "echo", "args": ["late"]}}
TRAIN = {"type": "ml.train", "params": {"dataset": "iris", "model": "logistic_regression"}}


@pytest.fixture(scope="module")
def late_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, CuttableProxy]]:
    workdir: Path = tmp_path_factory.mktemp("late-confirms")
    proxy = CuttableProxy(RABBITMQ_HOST, 5672)
    with rabbitmq_vhost() as vhost, contextlib.ExitStack() as cleanup:
        env = base_env(workdir, vhost, f"sqlite:///{workdir / 'conveyor.db'}")
        stack = Stack(workdir=workdir, env=env, vhost=vhost)
        cleanup.callback(proxy.close)
        cleanup.callback(stack.stop)
        broker_url = env["CONVEYOR_BROKER_URL"]
        stack.start_api(
            CONVEYOR_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}",
            CONVEYOR_PUBLISH_TIMEOUT_S="1.5",
        )
        stack.start_worker("cmd", CONVEYOR_BROKER_URL=broker_url)
        stack.wait_ready()
        yield stack, proxy


@contextlib.contextmanager
def replies_held(proxy: CuttableProxy) -> Iterator[None]:
    proxy.hold_replies()
    try:
        yield
    finally:
        proxy.release_replies()


def test_a_job_claimed_before_its_late_confirm_is_kept_and_answered_202(late_stack):
    stack, proxy = late_stack
    with stack.client() as client:
        with replies_held(proxy):
            started = time.monotonic()
            response = client.post("/v1/jobs", json=ECHO)
            assert time.monotonic() - started >= 1.5  # it did wait for the confirm, in vain
        # The worker had claimed and run it meanwhile: withdrawing it would have meant a
        # 503 for a job that ran, and a second run when the caller retried.
        assert response.status_code == 202, response.text
        job = stack.wait_for(client, response.json()["id"], {"succeeded", "failed"})
        assert (job["state"], job["attempts"]) == ("succeeded", 1)
        assert "claimed before its publish confirm arrived" in stack.services["api"].log()
        # The gateway's channel survives the late confirm: the next job goes through.
        after = stack.submit(client, ECHO["type"], ECHO["params"])
        assert stack.wait_for(client, after["id"], {"succeeded"})["state"] == "succeeded"


def test_a_replay_waits_for_its_first_requests_outcome(late_stack):
    stack, proxy = late_stack
    key = {"Idempotency-Key": f"late-{time.monotonic_ns()}"}
    answers: dict[str, httpx.Response] = {}

    def send(name: str) -> None:
        with stack.client() as client:
            answers[name] = client.post("/v1/jobs", json=TRAIN, headers=key)

    with replies_held(proxy):
        first = threading.Thread(target=send, args=("first",))
        first.start()
        time.sleep(0.3)  # the first request's row exists, its confirm is held back
        send("replay")
        first.join()
    # Nobody consumes ml.train: the first request's job was unclaimed, so it was withdrawn.
    assert answers["first"].status_code == 503, answers["first"].text
    with stack.client() as client:
        replay = answers["replay"]
        if replay.status_code == 202:  # it queued the job anew once the first had failed
            assert client.get(f"/v1/jobs/{replay.json()['id']}").status_code == 200
        else:
            assert replay.status_code == 503, replay.text
            listed = client.get("/v1/jobs", params={"type": "ml.train"}).json()["items"]
            assert listed == []
