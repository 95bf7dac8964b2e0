"""`conveyor-worker-ml`: consume the ml job queue and run its jobs."""

from __future__ import annotations

from conveyor_core.jobs import ML_TRAIN
from conveyor_core.worker import run_worker

# Imported here, in the worker's main process, before the pool processes are forked:
# scikit-learn, SciPy and skops (several seconds to import) are then loaded once and
# shared by every pool process, so no job pays for the import.
from conveyor_worker_ml.job import run
from conveyor_worker_ml.pool import limit_threads, warm_up


def main() -> None:
    limit_threads()
    warm_up()
    run_worker(ML_TRAIN, run)


if __name__ == "__main__":
    main()
