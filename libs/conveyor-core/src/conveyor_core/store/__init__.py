"""Job store access shared by the gateway (async) and the workers (sync)."""

from conveyor_core.store.models import ApiKey, Base, Job, JobEvent, utcnow

__all__ = ["ApiKey", "Base", "Job", "JobEvent", "utcnow"]
