"""Hold a worker's consumer back until its pool processes have warmed up.

Celery consumes as soon as its pool processes exist and hands a job to the first one that
says it is up, which a process does before its warm-up thread has connected to the job
store or touched its libraries' lazy parts. A job waiting in the queue as a worker starts
(KEDA's scale from zero), or sent just after it said ready, paid for that: 100-140 ms on
PostgreSQL against 8-15 ms for the next ones. Waiting here, the worker says ready (and
takes its first message) only once every pool process is warm, or `wait_s` has passed.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from typing import Any

from celery import bootsteps
from celery.concurrency.prefork import TaskPool

log = logging.getLogger("conveyor.worker.warm_pool")

# A warm-up that takes longer (a job store that does not answer) is left to finish beside
# the first jobs, which then retry the store as usual.
WAIT_S = 15.0


class WarmPool:
    def __init__(self, processes: int, wait_s: float = WAIT_S) -> None:
        self.processes = processes
        self.wait_s = wait_s
        # Made before the pool forks: each pool process releases the same semaphore.
        self._warm = multiprocessing.get_context("fork").Semaphore(0)

    def process_warm(self) -> None:
        """In a pool process: its warm-up is over, done or given up."""
        self._warm.release()

    def wait(self) -> int:
        """In the worker's main process: wait for each process's warm-up, `wait_s` in all;
        return how many were warm in time."""
        deadline = time.monotonic() + self.wait_s
        for warm in range(self.processes):
            if not self._warm.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return warm
        return self.processes

    def step(self) -> type[bootsteps.StartStopStep]:
        """A worker bootstep after the pool's start and before the consumer's (always last)."""
        pool = self

        class WaitForWarmPool(bootsteps.StartStopStep):  # type: ignore[misc]
            requires = ("celery.worker.components:Pool",)

            def start(self, worker: Any) -> None:
                if not isinstance(worker.pool, TaskPool):  # no forked processes to wait for
                    return
                started = time.monotonic()
                warm = pool.wait()
                waited = time.monotonic() - started
                if warm < pool.processes:
                    log.warning(
                        "%d of %d pool processes still warming up after %.0f s; consuming now",
                        pool.processes - warm,
                        pool.processes,
                        waited,
                    )
                else:
                    log.info("%d pool processes warm in %.2f s", warm, waited)

        return WaitForWarmPool
