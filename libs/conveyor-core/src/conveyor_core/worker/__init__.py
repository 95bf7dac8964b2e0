"""What every worker service shares: the task wrapper, the job context, the entry point."""

from conveyor_core.worker.context import JobCancelled, JobContext, JobFailed
from conveyor_core.worker.runtime import run_worker

__all__ = ["JobCancelled", "JobContext", "JobFailed", "run_worker"]
