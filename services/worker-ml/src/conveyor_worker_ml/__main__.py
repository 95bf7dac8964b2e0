"""`conveyor-worker-ml`: consume the ml job queue and run its jobs."""

from conveyor_core.jobs import ML_TRAIN
from conveyor_core.worker import run_worker

from conveyor_worker_ml.job import run


def main() -> None:
    run_worker(ML_TRAIN, run, short_name="ml")


if __name__ == "__main__":
    main()
