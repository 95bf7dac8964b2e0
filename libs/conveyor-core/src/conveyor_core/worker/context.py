"""The handle a job implementation gets: progress, output, cancellation, artifacts, settings."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any

from conveyor_core.artifact_paths import job_artifact_path
from conveyor_core.artifacts import ArtifactStore
from conveyor_core.event_contract import OutputStream
from conveyor_core.settings import Settings
from conveyor_core.store.models import utcnow
from conveyor_core.store.worker_ops import OutputLine

log = logging.getLogger("conveyor.worker")

# Stores a batch of one attempt's output lines as events (WorkerJobStore.append_output).
OutputSink = Callable[[uuid.UUID, list[OutputLine], int], object]


class JobFailed(Exception):
    """The job cannot succeed for a reason the caller should read (bad column, bad file)."""


class JobCancelled(Exception):
    """Raised inside a job when its cancellation was requested."""


class JobContext:
    def __init__(
        self,
        job_id: uuid.UUID,
        settings: Settings,
        artifacts: ArtifactStore,
        attempt: int = 1,
        output_sink: OutputSink | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt  # which run of the job this is; fences off a superseded run
        self.settings = settings
        self.artifacts = artifacts
        self.cancel_event = threading.Event()
        # Set when this run could not renew its heartbeat lease: it is stopped like a
        # cancel, but its outcome is nobody's to record (the job may be another run's now).
        self.lease_lost = False
        self._progress = 0.0
        self._produced: list[str] = []
        self._cancel_callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._output_sink = output_sink
        self._pending_output: list[OutputLine] = []
        self._output_lines = 0
        self._flush_lock = threading.Lock()  # one batch at a time keeps lines in order

    # --- progress
    def report_progress(self, fraction: float) -> None:
        """Record how far the job is (0..1); synced to the job store on the next heartbeat."""
        self._progress = min(1.0, max(0.0, float(fraction)))
        self.check_cancelled()

    @property
    def progress(self) -> float:
        return self._progress

    # --- output, for the live event stream
    def emit_output(self, stream: OutputStream, line: str) -> bool:
        """Queue one line the job printed; `flush_output` stores what is queued as events.

        Only the first CONVEYOR_EVENTS_MAX_OUTPUT_LINES lines of a run are kept, so a
        chatty command cannot flood the job store; the result still has the full output.
        False once that many were queued: the caller may stop producing lines.
        """
        with self._lock:
            if self._output_lines >= self.settings.events_max_output_lines:
                return False
            self._output_lines += 1
            self._pending_output.append(OutputLine(stream, line, utcnow()))
            return self._output_lines < self.settings.events_max_output_lines

    def flush_output(self) -> None:
        """Store the queued output lines. A failed write drops them: the stream is a view."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending_output = self._pending_output, []
            if not batch or self._output_sink is None:
                return
            try:
                self._output_sink(self.job_id, batch, self.attempt)
            except Exception:
                log.warning(
                    "job %s: %d output line(s) not stored", self.job_id, len(batch), exc_info=True
                )

    # --- cancellation
    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` (from the heartbeat thread) when a cancel arrives; returns an undo."""
        with self._lock:
            self._cancel_callbacks.append(callback)
            already = self.cancel_event.is_set()
        if already:
            callback()

        def remove() -> None:
            with self._lock:
                if callback in self._cancel_callbacks:
                    self._cancel_callbacks.remove(callback)

        return remove

    def lose_lease(self) -> None:
        """Stop the job: its heartbeat lease expired, so another worker may take it over."""
        self.lease_lost = True
        self.request_cancel()

    def request_cancel(self) -> None:
        with self._lock:
            if self.cancel_event.is_set():
                return
            self.cancel_event.set()
            callbacks = list(self._cancel_callbacks)
        for callback in callbacks:
            callback()

    # --- artifacts
    def artifact_path(self, name: str) -> str:
        """Store-relative path of this run's artifact `name`, recorded as produced.

        In the attempt's own folder: published only if this run records the job's outcome.
        """
        path = job_artifact_path(self.job_id, name, self.attempt)
        if name not in self._produced:
            self._produced.append(name)
        return path

    def open_artifact(self, name: str, mode: str = "wb") -> IO[Any]:
        return self.artifacts.open(self.artifact_path(name), mode)

    def artifact_url(self, name: str) -> str:
        """Full location (local path or URL) for libraries that write files themselves."""
        url = self.artifacts.url(self.artifact_path(name))
        if self.artifacts.is_local:
            import os

            os.makedirs(os.path.dirname(url), exist_ok=True)
        return url

    @property
    def produced_artifacts(self) -> list[str]:
        return list(self._produced)
