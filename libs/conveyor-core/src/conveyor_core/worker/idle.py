"""Exit a worker that has had nothing to do for a while: a KEDA ScaledJob pod's end.

A ScaledJob starts a pod per message it counts, but by the time the pod consumes, another
pod may have taken that message. Such a pod would wait until its Job's
activeDeadlineSeconds, holding its resources. With CONVEYOR_WORKER_IDLE_EXIT_S, a worker
that has held no message for that long does a warm shutdown and exits 0, so its Job
completes.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from conveyor_core.worker.steps import timer_step

log = logging.getLogger("conveyor.worker.idle")


class IdleExit:
    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.busy_at = time.monotonic()  # consuming starts now

    @property
    def check_interval_s(self) -> float:
        return min(1.0, self.idle_s / 4)

    def consuming(self, consumer: Any) -> None:
        self.busy_at = time.monotonic()

    def tick(self, consumer: Any) -> None:
        now = time.monotonic()
        if worker_state.active_requests or worker_state.reserved_requests:
            self.busy_at = now
            return
        if now - self.busy_at >= self.idle_s:
            log.info("no job for %.0f s (CONVEYOR_WORKER_IDLE_EXIT_S): stopping", self.idle_s)
            self.busy_at = float("inf")  # once
            os.kill(os.getpid(), signal.SIGTERM)  # the main process: Celery's warm shutdown


def idle_exit_step(idle: IdleExit) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep running `idle.tick` on the worker's event loop timer."""
    return timer_step("idle-exit", idle.check_interval_s, idle.tick, on_start=idle.consuming)
