"""Worker metrics, one series per job type. Children of the prefork pool write them too."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from conveyor_core.metrics import JOB_SECONDS_BUCKETS

JOBS_STARTED = Counter("conveyor_jobs_started_total", "Jobs a worker started running.", ["type"])
JOBS_SUCCEEDED = Counter("conveyor_jobs_succeeded_total", "Jobs that ended succeeded.", ["type"])
JOBS_FAILED = Counter("conveyor_jobs_failed_total", "Jobs that ended failed.", ["type"])
JOBS_CANCELLED = Counter(
    "conveyor_jobs_cancelled_total", "Running jobs that ended cancelled.", ["type"]
)
JOBS_RETRIED = Counter(
    "conveyor_jobs_retried_total",
    "Redeliveries started again after a lost worker (attempt 2 and later).",
    ["type"],
)
JOBS_DEFERRED = Counter(
    "conveyor_jobs_deferred_total",
    "Jobs sent to the back of their queue: their key had CONVEYOR_MAX_RUNNING_PER_KEY running.",
    ["type"],
)
JOB_RUN_SECONDS = Histogram(
    "conveyor_job_run_duration_seconds",
    "Run time of jobs, start to outcome.",
    ["type"],
    buckets=JOB_SECONDS_BUCKETS,
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "conveyor_job_queue_wait_seconds",
    "Time from submission to first start.",
    ["type"],
    buckets=JOB_SECONDS_BUCKETS,
)
JOBS_IN_PROGRESS = Gauge(
    "conveyor_jobs_in_progress", "Jobs running now.", ["type"], multiprocess_mode="livesum"
)
LAST_SUCCESS = Gauge(
    "conveyor_job_last_success_timestamp_seconds",
    "Unix time of the last job that succeeded.",
    ["type"],
    multiprocess_mode="max",
)
WORKER_UP = Gauge(
    "conveyor_worker_up",
    "1 while the worker consumes its queue.",
    ["type"],
    multiprocess_mode="livemax",
)


def declare_series(job_type: str) -> None:
    """Create this type's series at zero, so rate() and increase() see the first event."""
    for metric in (
        JOBS_STARTED,
        JOBS_SUCCEEDED,
        JOBS_FAILED,
        JOBS_CANCELLED,
        JOBS_RETRIED,
        JOBS_DEFERRED,
        JOB_RUN_SECONDS,
        JOB_QUEUE_WAIT_SECONDS,
        JOBS_IN_PROGRESS,
    ):
        metric.labels(job_type)
