"""The hand-over's bookkeeping: which jobs to ack, and the prefetch window it leaves.

The real broker and worker behaviour is in tests/reliability/test_consumer_timeout.py; this
checks the window arithmetic for every pool size, which the slow test cannot afford.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pytest
from celery.worker import state as worker_state
from conveyor_core.worker.handover import Handover


@dataclass(eq=False)
class FakeRequest:
    time_start: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kwargs: dict[str, str] = field(default_factory=lambda: {"job_id": str(uuid.uuid4())})
    acknowledged: bool = False
    hostname: str = "ml@test"
    worker_pid: int = 4242

    def acknowledge(self) -> None:
        self.acknowledged = True


@dataclass
class FakeQos:
    value: int

    def set(self, value: int) -> None:
        self.value = value


@dataclass
class FakeConsumer:
    qos: FakeQos
    calls: list[str] = field(default_factory=list)

    def cancel_task_queue(self, queue: str) -> None:
        self.calls.append(f"cancel {queue}")

    def add_task_queue(self, queue: str) -> None:
        self.calls.append(f"add {queue}")


class FakeStore:
    def __init__(self) -> None:
        self.handed_over: list[uuid.UUID] = []

    def hand_over(self, job_id: uuid.UUID, run: str) -> bool:
        assert run == "ml@test/4242"  # the pool process that runs it
        self.handed_over.append(job_id)
        return True


@pytest.fixture
def requests():
    running: list[FakeRequest] = []  # strong refs: active_requests is a WeakSet
    yield running
    for request in running:
        worker_state.active_requests.discard(request)


def start(requests: list[FakeRequest], age_s: float) -> FakeRequest:
    request = FakeRequest(time_start=time.time() - age_s)
    requests.append(request)
    worker_state.active_requests.add(request)
    return request


def finish(request: FakeRequest) -> None:
    worker_state.active_requests.discard(request)


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_the_window_shrinks_per_handed_over_job_and_consuming_pauses_when_none_is_free(
    requests, concurrency
):
    store = FakeStore()
    handover = Handover(lambda: store, "conveyor.q", concurrency, after_s=60)
    consumer = FakeConsumer(FakeQos(concurrency))
    young = start(requests, age_s=1)
    old = [start(requests, age_s=120) for _ in range(concurrency)]

    handover.tick(consumer)

    assert all(request.acknowledged for request in old) and not young.acknowledged
    assert len(store.handed_over) == concurrency
    assert consumer.calls == ["cancel conveyor.q"]
    assert handover.paused

    finish(old[0])
    handover.tick(consumer)
    assert consumer.calls == ["cancel conveyor.q", "add conveyor.q"]
    assert consumer.qos.value == 1  # one process free, one message at a time

    for request in old[1:]:
        finish(request)
    handover.tick(consumer)
    assert consumer.qos.value == concurrency
    assert not handover.paused


def test_a_job_is_handed_over_once_and_not_before_its_time(requests):
    store = FakeStore()
    handover = Handover(lambda: store, "conveyor.q", 2, after_s=60)
    consumer = FakeConsumer(FakeQos(2))
    request = start(requests, age_s=61)
    start(requests, age_s=59)

    handover.tick(consumer)
    handover.tick(consumer)

    assert store.handed_over == [uuid.UUID(request.kwargs["job_id"])]
    assert consumer.qos.value == 1 and consumer.calls == []
