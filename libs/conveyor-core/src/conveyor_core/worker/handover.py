"""Jobs longer than RabbitMQ's consumer_timeout: ack the message, keep the job.

RabbitMQ closes a channel whose delivery stays unacked past `consumer_timeout` (30 min by
default; RabbitMQ 3.10 has no per-queue override), which would redeliver a long job while
it still runs. So once a job has run for `ack_handover_after_s`, the worker's main process
records the hand-over in the job store and acks the message. From then on the heartbeat is
the job's only lease: if its worker is lost, the gateway's reaper queues the job again.

An acked job no longer counts against the prefetch window, so RabbitMQ would send another
message that waits, unacked, for a busy pool process and could time out in turn. The window
is shrunk by one per handed-over job, and consuming pauses while every process holds one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state
from sqlalchemy.exc import SQLAlchemyError

from conveyor_core.store.worker_ops import WorkerJobStore, run_holder
from conveyor_core.worker.steps import timer_step

log = logging.getLogger("conveyor.worker.handover")


class Handover:
    def __init__(
        self, store: Callable[[], WorkerJobStore], queue: str, concurrency: int, after_s: float
    ) -> None:
        self.store = store  # made lazily: this runs in the worker's main process
        self.queue = queue
        self.concurrency = concurrency
        self.after_s = after_s
        self.handed_over: set[str] = set()  # ids of requests acked early and still running
        self.paused = False

    @property
    def scan_interval_s(self) -> float:
        return min(5.0, max(self.after_s / 4, 0.2))

    def tick(self, consumer: Any) -> None:
        self._forget_finished(consumer)
        self._fit_window(consumer)
        now = time.time()
        for request in list(worker_state.active_requests):
            started = request.time_start
            if request.acknowledged or not started or now - started < self.after_s:
                continue
            job_id = uuid.UUID(request.kwargs["job_id"])
            run = run_holder(request.hostname, request.worker_pid)
            try:
                held = self.store().hand_over(job_id, run)
            except SQLAlchemyError:
                log.warning("job %s: job store unavailable; hand-over retried", job_id)
                continue
            if not held:
                # The run is not the job's any more (another worker took it over, or it
                # just finished): the message stays with the run, which acks it when done.
                continue
            request.acknowledge()  # sent on the event loop's next turn
            self.handed_over.add(request.id)
            log.info(
                "job %s has run %.0f s: handed over (message acked, heartbeat is its lease)",
                job_id,
                now - started,
            )
            self._fit_window(consumer)

    def attach(self, consumer: Any) -> None:
        """A new connection starts with the full window: shrink it again. (A paused queue
        stays deselected across reconnects, so `paused` still holds.)"""
        self._forget_finished(consumer)
        self._fit_window(consumer)

    def _forget_finished(self, consumer: Any) -> None:
        running = {request.id for request in worker_state.active_requests}
        finished = self.handed_over - running
        self.handed_over -= finished

    def _fit_window(self, consumer: Any) -> None:
        free = self.concurrency - len(self.handed_over)
        if free < 1:
            if not self.paused:
                log.info("every pool process runs a handed-over job: pausing %s", self.queue)
                consumer.cancel_task_queue(self.queue)
                self.paused = True
            return
        if self.paused:
            log.info("a pool process is free again: resuming %s", self.queue)
            consumer.add_task_queue(self.queue)
            self.paused = False
        if consumer.qos is not None and consumer.qos.value != free:
            consumer.qos.set(free)


def handover_step(handover: Handover) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep running `handover.tick` on the worker's event loop timer."""
    return timer_step("handover", handover.scan_interval_s, handover.tick, on_start=handover.attach)
