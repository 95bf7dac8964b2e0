"""`conveyor-worker-data`: consume the data job queue and run its jobs."""

from conveyor_core.jobs import DATA_TRANSFORM
from conveyor_core.worker import run_worker

from conveyor_worker_data.job import run, warm_up


def main() -> None:
    run_worker(DATA_TRANSFORM, run, warm_up=warm_up)


if __name__ == "__main__":
    main()
