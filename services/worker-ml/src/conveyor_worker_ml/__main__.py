"""`conveyor-worker-ml`: consume the ml job queue and run its jobs."""

from __future__ import annotations

from typing import Any

from celery import signals
from conveyor_core.jobs import ML_TRAIN
from conveyor_core.settings import get_settings
from conveyor_core.worker import run_worker
from threadpoolctl import threadpool_limits

# Imported here, in the worker's main process, before the pool processes are forked:
# scikit-learn, SciPy and skops (several seconds to import) are then loaded once and
# shared by every pool process, so no job pays for the import.
from conveyor_worker_ml.job import run


def main() -> None:
    signals.worker_process_init.connect(limit_threads, weak=False)
    run_worker(ML_TRAIN, run)


def limit_threads(**_: Any) -> None:
    """Hold each pool process's BLAS and OpenMP pools to CONVEYOR_ML_THREADS_PER_PROCESS.

    Here, in the pool process's main thread (where its jobs run), not in the warm-up
    thread: OpenMP's thread count is a setting of the thread that sets it.
    """
    threadpool_limits(limits=get_settings().ml_threads_per_process)


if __name__ == "__main__":
    main()
