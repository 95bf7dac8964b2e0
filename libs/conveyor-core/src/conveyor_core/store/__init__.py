"""Job store access shared by the gateway (async) and the workers (sync)."""

from conveyor_core.store.models import ApiKey, Base, Job, utcnow

__all__ = ["ApiKey", "Base", "Job", "utcnow"]
