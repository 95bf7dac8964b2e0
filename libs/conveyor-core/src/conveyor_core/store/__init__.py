"""Job store access shared by the gateway (async) and the workers (sync)."""

from conveyor_core.store.models import Base, Job, utcnow

__all__ = ["Base", "Job", "utcnow"]
