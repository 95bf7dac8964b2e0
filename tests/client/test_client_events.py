"""The client's reading of a job's event stream, against recorded `text/event-stream` bodies.

httpx's MockTransport stands in for the gateway here: what is tested is our parsing, our
bookkeeping of `Last-Event-ID` and our reconnecting, byte for byte against the stream's
contract. tests/cli/test_wait.py runs the same code against the real endpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from conveyor_client import (
    AsyncConveyorClient,
    ConnectionFailed,
    ConveyorClient,
    ConveyorError,
    JobState,
    JobView,
    NotFound,
    OutputEvent,
    ProgressEvent,
    StateEvent,
)
from conveyor_client.job_stream import MalformedEvent, StreamPosition

JOB_ID = "5f0c4c38-3c1e-4d59-9a43-0e4b4b0f5a11"
URL = "http://conveyor.test"


def job_view(state: str, progress: float) -> str:
    return json.dumps(
        {
            "id": JOB_ID,
            "type": "cmd.run",
            "state": state,
            "progress": progress,
            "attempts": 1 if state != "queued" else 0,
            "created_at": "2026-11-27T09:47:07.271446Z",
            "started_at": None,
            "finished_at": None,
            "params": {"command": "echo", "args": ["hello"]},
            "result": None,
            "error": None,
            "cancel_requested": False,
            "artifacts": [],
        },
        separators=(",", ":"),
    )


# Recorded as the contract has it: a snapshot first, a keep-alive comment, state, progress
# and output events, and the terminal state last (then the server closes the stream).
FIRST_PART = (
    f"id: 1\nevent: snapshot\ndata: {job_view('queued', 0)}\n\n"
    ": keep-alive\n\n"
    'id: 2\nevent: state\ndata: {"state":"running","attempts":1,"error":null,'
    '"at":"2026-11-27T09:47:07.5Z"}\n\n'
    'id: 3\nevent: progress\ndata: {"progress":0.5,"at":"2026-11-27T09:47:08Z"}\n\n'
)
SECOND_PART = (
    'id: 4\nevent: output\ndata: {"stream":"stdout","line":"hello",'
    '"at":"2026-11-27T09:47:08.1Z"}\n\n'
    'id: 5\nevent: output\ndata: {"stream":"stderr","line":"warn: x",'
    '"at":"2026-11-27T09:47:08.2Z"}\n\n'
    ": keep-alive\n\n"
    'id: 6\nevent: state\ndata: {"state":"succeeded","attempts":1,"error":null,'
    '"result":{"exit_code":0,"stdout":"hello\\n"},"at":"2026-11-27T09:47:09Z"}\n\n'
)
SSE = {"content-type": "text/event-stream; charset=utf-8"}


class Dropped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends `text`, in small pieces, then loses the connection."""

    def __init__(self, text: str) -> None:
        data = text.encode()
        self.pieces = [data[i : i + 37] for i in range(0, len(data), 37)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        raise httpx.ReadError("connection reset by peer")


Handler = Callable[[httpx.Request], httpx.Response]


def recording(*responses: Callable[[], httpx.Response]) -> tuple[list[httpx.Request], Handler]:
    """A handler answering each request with the next response, remembering the requests."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.url.path == f"/v1/jobs/{JOB_ID}/events"
        return responses[len(seen) - 1]()

    return seen, handle


def sync_client(handler: Handler, **options) -> ConveyorClient:
    return ConveyorClient(URL, "cnv_test", transport=httpx.MockTransport(handler), **options)


def test_a_whole_stream_becomes_typed_events_in_order():
    seen, handler = recording(
        lambda: httpx.Response(200, headers=SSE, text=FIRST_PART + SECOND_PART)
    )
    with sync_client(handler) as client:
        events = list(client.events(JOB_ID))

    assert [(e.id, e.kind) for e in events] == [
        (1, "snapshot"),
        (2, "state"),
        (3, "progress"),
        (4, "output"),
        (5, "output"),
        (6, "state"),
    ]
    snapshot, running, progress, out, err, done = (e.data for e in events)
    assert isinstance(snapshot, JobView) and snapshot.state is JobState.QUEUED
    assert isinstance(running, StateEvent) and running.state is JobState.RUNNING
    assert isinstance(progress, ProgressEvent) and progress.progress == 0.5
    assert isinstance(out, OutputEvent) and (out.stream, out.line) == ("stdout", "hello")
    assert isinstance(err, OutputEvent) and err.stream == "stderr"
    assert isinstance(done, StateEvent) and done.result == {"exit_code": 0, "stdout": "hello\n"}
    assert events[-1].final_state is JobState.SUCCEEDED
    assert len(seen) == 1
    assert "Last-Event-ID" not in seen[0].headers  # a first connection asks for a snapshot
    assert seen[0].headers["Accept"] == "text/event-stream"
    assert seen[0].headers["Authorization"] == "Bearer cnv_test"


def test_a_dropped_stream_resumes_after_the_last_event_it_delivered():
    seen, handler = recording(
        lambda: httpx.Response(200, headers=SSE, stream=Dropped(FIRST_PART)),
        lambda: httpx.Response(200, headers=SSE, text=SECOND_PART),
    )
    with sync_client(handler) as client:
        ids = [event.id for event in client.events(JOB_ID)]

    assert ids == [1, 2, 3, 4, 5, 6]  # no gap, no repeat
    assert [r.headers.get("Last-Event-ID") for r in seen] == [None, "3"]


def test_a_stream_closed_before_the_job_ended_is_resumed():
    seen, handler = recording(
        lambda: httpx.Response(200, headers=SSE, text=FIRST_PART),  # clean close, job running
        lambda: httpx.Response(200, headers=SSE, text=SECOND_PART),
    )
    with sync_client(handler) as client:
        assert [e.id for e in client.events(JOB_ID, last_event_id=0)] == [1, 2, 3, 4, 5, 6]
    assert [r.headers.get("Last-Event-ID") for r in seen] == ["0", "3"]


def test_a_snapshot_of_a_finished_job_ends_the_stream():
    finished = f"id: 9\nevent: snapshot\ndata: {job_view('failed', 0.2)}\n\n"
    seen, handler = recording(lambda: httpx.Response(200, headers=SSE, text=finished))
    with sync_client(handler) as client:
        events = list(client.events(JOB_ID))
    assert [e.final_state for e in events] == [JobState.FAILED]
    assert len(seen) == 1


def test_resuming_past_the_final_event_ends_quietly():
    seen, handler = recording(lambda: httpx.Response(204))
    with sync_client(handler) as client:
        assert list(client.events(JOB_ID, last_event_id=6)) == []
    assert len(seen) == 1


def test_it_gives_up_naming_the_url_after_reconnects_that_bring_nothing():
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with sync_client(refuse, max_reconnects=2) as client, pytest.raises(ConnectionFailed) as caught:
        list(client.events(JOB_ID))
    assert attempts == 3  # the first try and two reconnects
    assert URL in str(caught.value) and "Connection refused" in str(caught.value)


def test_an_unknown_job_is_not_retried():
    seen, handler = recording(
        lambda: httpx.Response(404, json={"detail": f"job {JOB_ID} not found"})
    )
    with sync_client(handler) as client, pytest.raises(NotFound) as caught:
        list(client.events(JOB_ID))
    assert caught.value.status == 404 and "not found" in caught.value.detail
    assert len(seen) == 1


def test_an_answer_that_is_not_an_event_stream_is_not_retried():
    # A proxy's HTML page or a wrong URL: reconnecting cannot cure it, so it is said at once.
    seen, handler = recording(lambda: httpx.Response(200, text="<html>login</html>"))
    with sync_client(handler) as client, pytest.raises(ConveyorError) as caught:
        list(client.events(JOB_ID))
    assert not isinstance(caught.value, ConnectionFailed)
    assert "did not answer with an event stream" in str(caught.value)
    assert len(seen) == 1


def test_an_unknown_event_kind_is_skipped_but_its_id_still_counts():
    text = (
        'id: 7\nevent: heartbeat-v2\ndata: {"anything":true}\n\n'
        'id: 8\nevent: state\ndata: {"state":"cancelled","attempts":1,"error":"cancelled by '
        'request","at":"2026-11-27T09:47:09Z"}\n\n'
    )
    seen, handler = recording(
        lambda: httpx.Response(200, headers=SSE, stream=Dropped(text.split("id: 8")[0])),
        lambda: httpx.Response(200, headers=SSE, text="id: 8" + text.split("id: 8")[1]),
    )
    with sync_client(handler) as client:
        events = list(client.events(JOB_ID, last_event_id=6))
    assert [(e.id, e.kind) for e in events] == [(8, "state")]
    assert [r.headers.get("Last-Event-ID") for r in seen] == ["6", "7"]


def test_data_that_does_not_match_its_kind_is_an_error():
    text = 'id: 3\nevent: progress\ndata: {"progress":"half"}\n\n'
    _, handler = recording(lambda: httpx.Response(200, headers=SSE, text=text))
    with sync_client(handler) as client, pytest.raises(MalformedEvent, match="progress event"):
        list(client.events(JOB_ID))


def test_the_servers_retry_field_sets_the_reconnect_delay():
    position = StreamPosition()
    assert [position.reconnect_delay(n) for n in (1, 2, 3, 6, 9)] == [0.25, 0.5, 1.0, 5.0, 5.0]
    from httpx_sse import ServerSentEvent

    position.advance(ServerSentEvent(event="keep", data="", id="", retry=1500))
    assert position.reconnect_delay(1) == 1.5


@pytest.mark.anyio
async def test_the_async_client_reads_and_resumes_the_same_way():
    seen: list[httpx.Request] = []
    bodies = [Dropped(FIRST_PART), None]

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = bodies[len(seen) - 1]
        if body is None:
            return httpx.Response(200, headers=SSE, text=SECOND_PART)
        return httpx.Response(200, headers=SSE, stream=body)

    async with AsyncConveyorClient(URL, transport=httpx.MockTransport(handle)) as client:
        events = [event async for event in client.events(JOB_ID)]
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].final_state is JobState.SUCCEEDED
    assert [r.headers.get("Last-Event-ID") for r in seen] == [None, "3"]
