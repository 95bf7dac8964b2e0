"""`conveyor-worker-cmd`: consume the cmd job queue and run its jobs."""

from conveyor_core.jobs import CMD_RUN
from conveyor_core.worker import run_worker

from conveyor_worker_cmd.job import run


def main() -> None:
    run_worker(CMD_RUN, run, short_name="cmd")


if __name__ == "__main__":
    main()
