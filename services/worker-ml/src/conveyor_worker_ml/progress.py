"""Map the steps of a training job onto slices of one 0..1 progress bar."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_core.worker import JobContext


@dataclass(frozen=True)
class ProgressSpan:
    """The slice [start, end] of the job's progress that one step fills."""

    ctx: JobContext
    start: float
    end: float

    def report(self, done: float) -> None:
        """Report that `done` (0..1) of this step is finished; raises JobCancelled if asked to."""
        done = min(1.0, max(0.0, done))
        self.ctx.report_progress(self.start + (self.end - self.start) * done)

    def part(self, index: int, count: int) -> ProgressSpan:
        """The `index`-th of `count` equal sub-slices, e.g. one cross-validation fold."""
        width = (self.end - self.start) / count
        return ProgressSpan(self.ctx, self.start + index * width, self.start + (index + 1) * width)
