"""A cmd worker whose jobs get stuck the way one in native code does: deaf to the soft
time limit's signal, so only the hard limit (the worker's main process killing the pool
process) can end them. Real Celery, RabbitMQ and job store; only the job itself is ours.

    python stuck_worker.py    # with the CONVEYOR_* environment of a stack
"""

from __future__ import annotations

import signal
import time
from typing import Any

from conveyor_core.jobs import CMD_RUN
from conveyor_core.worker import JobContext, run_worker
from pydantic import BaseModel


def stuck(params: Any, ctx: JobContext) -> BaseModel:
    # Celery's soft limit is SIGUSR1, turned into an exception when Python code runs: a
    # long call into C never lets it through. Blocking it here does the same.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(600)
    raise AssertionError("the hard time limit should have killed this process")


if __name__ == "__main__":
    run_worker(CMD_RUN, stuck)
