"""`GET /v1/jobs/{id}/events`: a job's live progress as Server-Sent Events."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import anyio
from conveyor_core.event_contract import EventKind
from fastapi import APIRouter, Header, HTTPException, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from conveyor_api.auth import PrincipalDep
from conveyor_api.deps import EventHubDep, EventStreamDep, JobsDep, SettingsDep
from conveyor_api.event_hub import StreamsExhausted, StreamSlot
from conveyor_api.event_stream import SEPARATOR
from conveyor_api.schemas import Problem

router = APIRouter(prefix="/v1", tags=["jobs"])
SHUTDOWN_GRACE_S = 2.0  # on server stop, streams end cleanly within this (uvicorn allows 20 s)

STREAM_DESCRIPTION = """\
`text/event-stream`. Each event has `id` (usable as `Last-Event-ID`), `event` and
one line of JSON `data`. Kinds: `snapshot` (the job as `GET /v1/jobs/{id}` shows it; first
when no `Last-Event-ID` is sent), `state` (`{state, attempts, error, result (succeeded
only), at}`), `progress` (`{progress, at}`), `output` (`{stream, line, at}`, `cmd.run`).
The server closes the stream after the event carrying a final state; `: keep-alive`
comments keep idle streams open. See docs/event-stream.md.
"""

EXAMPLE_STREAM = (
    'id: 0\nevent: snapshot\ndata: {"id": "...", "state": "queued", ...}\n\n'
    'id: 1\nevent: state\ndata: {"state":"running","attempts":1,"error":null,"at":"..."}\n\n'
    'id: 2\nevent: progress\ndata: {"progress":0.4,"at":"..."}\n\n'
    'id: 3\nevent: state\ndata: {"state":"succeeded","attempts":1,"error":null,'
    '"result":{...},"at":"..."}\n\n'
)

# One item per event (OpenAPI 3.2's itemSchema for text/event-stream); comments are not items.
EVENT_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "For Last-Event-ID"},
        "event": {"type": "string", "enum": [kind.value for kind in EventKind]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": STREAM_DESCRIPTION,
        "content": {
            "text/event-stream": {"itemSchema": EVENT_ITEM_SCHEMA, "example": EXAMPLE_STREAM}
        },
    },
    204: {"description": "Last-Event-ID is the job's final event: nothing more will come"},
    404: {"model": Problem, "description": "No such job"},
    503: {"model": Problem, "description": "This gateway holds its most streams; retry later"},
}


class JobEventResponse(EventSourceResponse):
    """An event stream that gives its slot back however it ends (even before it started)."""

    def __init__(self, *args: Any, slot: StreamSlot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses=RESPONSES,
    summary="Follow a job's state, progress and output live (Server-Sent Events)",
)
async def job_events(
    job_id: uuid.UUID,
    jobs: JobsDep,
    hub: EventHubDep,
    streams: EventStreamDep,
    settings: SettingsDep,
    caller: PrincipalDep,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            description="Resume after this event: every later event is sent, none twice.",
        ),
    ] = None,
) -> Response:
    job = await jobs.get(job_id, caller.owner_filter)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    if last_event_id is not None and await streams.has_ended_for(job, last_event_id):
        # The client saw the final event; 204 tells an EventSource to stop reconnecting.
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    try:
        slot = hub.open_stream()
    except StreamsExhausted as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"{error}; retry later, or poll GET /v1/jobs/{job_id}",
            headers={"Retry-After": "5"},
        ) from error
    shutdown = anyio.Event()
    return JobEventResponse(
        streams.follow(job, last_event_id, shutdown),
        slot=slot,
        ping=settings.events_keepalive_s,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SEPARATOR),
        sep=SEPARATOR,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )
