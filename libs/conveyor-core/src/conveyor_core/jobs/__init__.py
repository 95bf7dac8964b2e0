"""The job type registry: the one place a job type is declared."""

from conveyor_core.jobs.base import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGE,
    AdmissionDenied,
    JobType,
)
from conveyor_core.jobs.cmd import CMD_RUN
from conveyor_core.jobs.data import DATA_TRANSFORM
from conveyor_core.jobs.ml import ML_TRAIN

JOB_TYPES: dict[str, JobType] = {job.name: job for job in (ML_TRAIN, CMD_RUN, DATA_TRANSFORM)}

__all__ = [
    "CMD_RUN",
    "DATA_TRANSFORM",
    "DEAD_LETTER_EXCHANGE",
    "EXCHANGE",
    "JOB_TYPES",
    "ML_TRAIN",
    "AdmissionDenied",
    "JobType",
]
