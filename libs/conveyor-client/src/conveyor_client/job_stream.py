"""A job's Server-Sent Events (`GET /v1/jobs/{id}/events`) as typed objects.

The stream's contract: each event has an integer `id`, an `event` kind and one line of
JSON `data`; `snapshot` (a whole JobView) comes first when no `Last-Event-ID` is sent;
`state`, `progress` and `output` follow; the server closes the stream after the
terminal state. SSE framing is httpx-sse's; this module only gives the events types and
remembers where a stream got to, so a dropped one resumes without gaps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from conveyor_core.api_models import JobView, OutputEvent, ProgressEvent, StateEvent
from conveyor_core.states import JobState
from httpx_sse import ServerSentEvent
from pydantic import BaseModel, ValidationError

log = logging.getLogger("conveyor_client.job_stream")

EventKind = Literal["snapshot", "state", "progress", "output"]
EventData = JobView | StateEvent | ProgressEvent | OutputEvent

_MODELS: dict[str, type[BaseModel]] = {
    "snapshot": JobView,
    "state": StateEvent,
    "progress": ProgressEvent,
    "output": OutputEvent,
}


class MalformedEvent(ValueError):
    """An event whose data does not match its kind's model."""


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream: `data` is the model of its `kind`."""

    id: int | None
    kind: EventKind
    data: EventData

    @property
    def final_state(self) -> JobState | None:
        """The job's final state when this event says the job ended, else None."""
        if isinstance(self.data, JobView | StateEvent) and self.data.state.is_final:
            return self.data.state
        return None


def parse_event(sse: ServerSentEvent) -> JobEvent | None:
    """The typed event, or None for a kind this client does not know (newer servers)."""
    model = _MODELS.get(sse.event)
    if model is None:
        log.debug("skipping an event of unknown kind %r", sse.event)
        return None
    try:
        data = model.model_validate_json(sse.data)
    except ValidationError as error:
        raise MalformedEvent(
            f"{sse.event} event {sse.id!r} has unexpected data: {error}"
        ) from error
    event_id = int(sse.id) if sse.id.isdigit() else None
    return JobEvent(id=event_id, kind=sse.event, data=data)  # type: ignore[arg-type]


class StreamPosition:
    """Where a job's stream got to: what to send as `Last-Event-ID`, whether it ended."""

    def __init__(self, last_event_id: int | str | None = None) -> None:
        self.last_event_id = None if last_event_id is None else str(last_event_id)
        self.retry_ms: int | None = None
        self.finished = False

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def advance(self, sse: ServerSentEvent) -> JobEvent | None:
        """Take one received event: remember its id and whether the job ended."""
        if sse.retry is not None:
            self.retry_ms = sse.retry
        if sse.id:
            self.last_event_id = sse.id
        event = parse_event(sse)
        if event is not None and event.final_state is not None:
            self.finished = True
        return event

    def reconnect_delay(self, failures: int) -> float:
        """Seconds before the next attempt: the server's `retry:` or a capped doubling."""
        if self.retry_ms is not None:
            return self.retry_ms / 1000
        return float(min(0.25 * 2 ** (failures - 1), 5.0))
