"""`conveyor-worker-ml`: consume the ml job queue and run its jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor_core.jobs import ML_TRAIN
from conveyor_core.worker import run_worker

if TYPE_CHECKING:
    from conveyor_core.jobs.ml import TrainParams, TrainResult
    from conveyor_core.worker import JobContext


def run(params: TrainParams, ctx: JobContext) -> TrainResult:
    """The job, imported on first use: scikit-learn, SciPy and skops (~140 MB) load in the
    pool process that runs an ML job, not in an idle worker."""
    from conveyor_worker_ml.job import run as train

    return train(params, ctx)


def main() -> None:
    run_worker(ML_TRAIN, run)


if __name__ == "__main__":
    main()
