"""`ConveyorClient` (sync) and `AsyncConveyorClient`: the gateway's `/v1` API, typed.

Both clients share everything but the transport: `_Requests` holds the configuration and
describes each call as an `_ApiCall` (the request, and how its answer reads), and
`_EventStream` follows a job's event stream across reconnects. The clients only send,
stream and sleep, with `httpx.Client` or `httpx.AsyncClient`. Errors are
`conveyor_client.errors` classes; models are the shared contract's (`conveyor_core.api_models`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Generic, Self, TypeVar

import anyio
import httpx
from conveyor_core.api_models import (
    FileStored,
    Health,
    JobAccepted,
    JobPage,
    JobTypeInfo,
    JobView,
    QueueStatus,
)
from conveyor_core.states import JobState
from httpx_sse import EventSource, ServerSentEvent, SSEError
from pydantic import TypeAdapter

from conveyor_client.config import ClientSettings
from conveyor_client.errors import (
    ApiError,
    ConnectionFailed,
    ConveyorError,
    ServerError,
    Unavailable,
    error_from_response,
)
from conveyor_client.job_stream import JobEvent, StreamPosition

Answer = TypeVar("Answer")
Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)
Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)
JobId = uuid.UUID | str

DEFAULT_TIMEOUT_S = 30.0
# A stream silent for longer than this is taken as dropped and resumed (the server sends
# keep-alive comments well within it).
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_RECONNECTS = 5
CHUNK_BYTES = 1 << 20
# The events endpoint's answer to a Last-Event-ID at (or past) the job's final event.
NO_CONTENT = 204

_JOB_TYPES = TypeAdapter(list[JobTypeInfo])
_QUEUES = TypeAdapter(list[QueueStatus])


def _unreachable(base_url: str, error: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(base_url, str(error) or type(error).__name__)


@dataclass(frozen=True)
class _ApiCall(Generic[Answer]):
    """One call of the API without its transport: the request, and how its answer reads."""

    method: str
    path: str
    parse: Callable[[bytes], Answer]
    options: dict[str, Any] = field(default_factory=dict)  # httpx's params, json, headers...
    # The statuses whose body is the answer; None: any success. Others raise their error.
    answer_statuses: tuple[int, ...] | None = None

    def read(self, response: httpx.Response) -> Answer:
        """The parsed answer, or the typed error (`conveyor_client.errors`) it stands for."""
        if self.answer_statuses is None:
            answered = not response.is_error
        else:
            answered = response.status_code in self.answer_statuses
        if not answered:
            raise error_from_response(response)
        return self.parse(response.content)


class _EventStream:
    """A job's event stream across reconnects, without its transport.

    A client opens one attempt after another while it is `ongoing`, each inside `attempt()`
    and with `options()` (which carry the `Last-Event-ID` to resume from); it hands the
    response to `begin` and every event received to `take`, and waits `reconnect_delay()`
    between attempts.
    """

    def __init__(
        self,
        base_url: str,
        job_id: JobId,
        last_event_id: int | str | None,
        timeout: httpx.Timeout,
        max_reconnects: int,
    ) -> None:
        self.path = f"/v1/jobs/{job_id}/events"
        self._base_url = base_url
        self._job_id = job_id
        self._timeout = timeout
        self._max_reconnects = max_reconnects
        self._position = StreamPosition(last_event_id)
        self._failures = 0  # attempts in a row that brought no event
        self._nothing_left = False  # the server had no event after our position

    @property
    def ongoing(self) -> bool:
        return not (self._position.finished or self._nothing_left)

    def options(self) -> dict[str, Any]:
        return {"headers": self._position.headers(), "timeout": self._timeout}

    def begin(self, response: httpx.Response) -> bool:
        """Whether the (successful) response carries events to read."""
        if response.status_code == NO_CONTENT:  # resumed past the final event
            self._nothing_left = True
        return not self._nothing_left

    def take(self, sse: ServerSentEvent) -> JobEvent | None:
        """The typed event (None for a kind this client does not know)."""
        event = self._position.advance(sse)
        self._failures = 0
        return event

    def reconnect_delay(self) -> float:
        return self._position.reconnect_delay(self._failures)

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """One connection: a failure that reconnecting may cure is counted, not raised.

        It is raised once `max_reconnects` attempts in a row have brought no event.
        """
        try:
            yield
        except SSEError as error:  # first: httpx-sse derives it from httpx.TransportError
            raise ConveyorError(
                f"{self._base_url} did not answer with an event stream: {error}"
            ) from error
        except (httpx.TransportError, Unavailable, ServerError) as error:
            self._failures += 1
            if self._failures > self._max_reconnects:
                if isinstance(error, httpx.TransportError):
                    raise _unreachable(self._base_url, error) from error
                raise
        else:
            if self.ongoing:  # closed before the job ended: resume
                self._failures += 1
                if self._failures > self._max_reconnects:
                    message = f"the event stream of job {self._job_id} keeps closing early"
                    raise ConveyorError(message)


class _Requests(ABC, Generic[Transport, Http]):
    """What both clients share: configuration, requests, and reading the answers."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        transport: Transport | None = None,
    ) -> None:
        settings = ClientSettings()
        self.base_url = (url or settings.url).rstrip("/")
        secret = api_key if api_key is not None else settings.api_key
        if secret is not None and not isinstance(secret, str):
            secret = secret.get_secret_value()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._stream_timeout = httpx.Timeout(timeout_s, read=idle_timeout_s)
        self.max_reconnects = max_reconnects
        timeout = httpx.Timeout(timeout_s)
        options = {"base_url": self.base_url, "headers": headers, "timeout": timeout}
        self._http: Http = self._connect(transport, options)

    @staticmethod
    @abstractmethod
    def _connect(transport: Transport | None, options: dict[str, Any]) -> Http:
        """The httpx client that carries the requests."""

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """A transport failure in the block is raised as ConnectionFailed, naming the URL."""
        try:
            yield
        except httpx.TransportError as error:
            raise _unreachable(self.base_url, error) from error

    def _event_stream(self, job_id: JobId, last_event_id: int | str | None) -> _EventStream:
        return _EventStream(
            self.base_url, job_id, last_event_id, self._stream_timeout, self.max_reconnects
        )

    @staticmethod
    def _submit_call(
        job_type: str, params: dict[str, Any] | None, idempotency_key: str | None
    ) -> _ApiCall[JobAccepted]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"type": job_type, "params": params or {}}
        options = {"json": body, "headers": headers}
        return _ApiCall("POST", "/v1/jobs", JobAccepted.model_validate_json, options)

    @staticmethod
    def _get_call(job_id: JobId) -> _ApiCall[JobView]:
        return _ApiCall("GET", f"/v1/jobs/{job_id}", JobView.model_validate_json)

    @staticmethod
    def _list_call(
        job_type: str | None, state: JobState | str | None, limit: int, cursor: str | None
    ) -> _ApiCall[JobPage]:
        query: dict[str, Any] = {"limit": limit}
        if job_type:
            query["type"] = job_type
        if state:
            query["state"] = str(state)
        if cursor:
            query["cursor"] = cursor
        return _ApiCall("GET", "/v1/jobs", JobPage.model_validate_json, {"params": query})

    @staticmethod
    def _cancel_call(job_id: JobId) -> _ApiCall[JobView]:
        return _ApiCall("POST", f"/v1/jobs/{job_id}/cancel", JobView.model_validate_json)

    @staticmethod
    def _job_types_call() -> _ApiCall[builtins.list[JobTypeInfo]]:
        return _ApiCall("GET", "/v1/job-types", _JOB_TYPES.validate_json)

    @staticmethod
    def _queues_call() -> _ApiCall[builtins.list[QueueStatus]]:
        return _ApiCall("GET", "/v1/queues", _QUEUES.validate_json)

    @staticmethod
    def _ready_call() -> _ApiCall[Health]:
        # /readyz answers 503 with the same body when a dependency is down: not an error here.
        return _ApiCall("GET", "/readyz", Health.model_validate_json, answer_statuses=(200, 503))

    @staticmethod
    def _upload_call(name: str, content: Any) -> _ApiCall[FileStored]:
        """`content`: bytes, a binary file, or an async iterator of chunks."""
        path = f"/v1/files/{name}"
        return _ApiCall("PUT", path, FileStored.model_validate_json, {"content": content})

    @staticmethod
    def _upload_name(source: str | Path | bytes, name: str | None) -> str:
        if isinstance(source, bytes):
            if name is None:
                raise ValueError("name is required when uploading bytes")
            return name
        return name or Path(source).name

    @staticmethod
    def _artifact_path(job_id: JobId, name: str) -> str:
        return f"/v1/jobs/{job_id}/artifacts/{name}"


class ConveyorClient(_Requests[httpx.BaseTransport, httpx.Client]):
    """The gateway's API, synchronously. Use as a context manager, or call `close()`.

    `url` and `api_key` default to CONVEYOR_URL and CONVEYOR_API_KEY; `transport` replaces
    httpx's (tests pass an `httpx.MockTransport`).
    """

    @staticmethod
    def _connect(transport: httpx.BaseTransport | None, options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(transport=transport, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _ApiCall[Answer]) -> Answer:
        with self._reaching():
            response = self._http.request(call.method, call.path, **call.options)
        return call.read(response)

    @contextlib.contextmanager
    def _get_stream(self, path: str, **options: Any) -> Iterator[httpx.Response]:
        """A streamed GET whose status is checked (an error's body read to describe it)."""
        with self._http.stream("GET", path, **options) as response:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            yield response

    def submit(
        self,
        job_type: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        """Queue a job; returns once it is durably queued (the gateway's 202)."""
        return self._send(self._submit_call(job_type, params, idempotency_key))

    def get(self, job_id: JobId) -> JobView:
        return self._send(self._get_call(job_id))

    def list(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back for the next page."""
        return self._send(self._list_call(job_type, state, limit, cursor))

    def iter_jobs(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        page_size: int = 100,
    ) -> Iterator[JobView]:
        """Every matching job, newest first, following the cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.list(job_type=job_type, state=state, limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: JobId) -> JobView:
        """Cancel a job: a queued one at once, a running one once its worker stops it."""
        return self._send(self._cancel_call(job_id))

    def job_types(self) -> builtins.list[JobTypeInfo]:
        return self._send(self._job_types_call())

    def queues(self) -> builtins.list[QueueStatus]:
        """Each job type's queue depth and consumers (admin keys only)."""
        return self._send(self._queues_call())

    def ready(self) -> Health:
        """The gateway's readiness: its broker and job store checks."""
        return self._send(self._ready_call())

    def upload_file(self, source: str | Path | bytes, name: str | None = None) -> FileStored:
        """Put an input file in the artifact store; pass the returned `path` as a `source`."""
        file_name = self._upload_name(source, name)
        if isinstance(source, bytes):
            return self._send(self._upload_call(file_name, source))
        with Path(source).open("rb") as handle:
            return self._send(self._upload_call(file_name, handle))

    def download_artifact(
        self, job_id: JobId, name: str, destination: str | Path | IO[bytes]
    ) -> int:
        """Stream an artifact to a path or a binary file; returns the bytes written.

        A path is written next to itself first and renamed when complete, so a failed
        download never leaves a truncated file under the requested name.
        """
        path = self._artifact_path(job_id, name)
        with self._reaching(), self._get_stream(path) as response, _landing(destination) as handle:
            return _copy(response.iter_bytes(CHUNK_BYTES), handle)

    def events(self, job_id: JobId, last_event_id: int | str | None = None) -> Iterator[JobEvent]:
        """The job's events until it ends, resuming with `Last-Event-ID` when the stream drops.

        Without `last_event_id` the first event is a `snapshot` of the whole job; with
        `last_event_id=0` the job's whole history is replayed instead. Gives up
        (ConnectionFailed, or the gateway's error) after `max_reconnects` attempts in a row
        that brought no event.
        """
        stream = self._event_stream(job_id, last_event_id)
        while stream.ongoing:
            with stream.attempt(), self._get_stream(stream.path, **stream.options()) as response:
                if stream.begin(response):
                    for sse in EventSource(response).iter_sse():
                        if (event := stream.take(sse)) is not None:
                            yield event
            if stream.ongoing:
                time.sleep(stream.reconnect_delay())

    def wait(self, job_id: JobId) -> JobView:
        """Follow the job's events until it ends; returns the finished job."""
        for _ in self.events(job_id):
            pass
        return self.get(job_id)


class AsyncConveyorClient(_Requests[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """The gateway's API for asyncio code. Use with `async with`, or await `aclose()`."""

    @staticmethod
    def _connect(
        transport: httpx.AsyncBaseTransport | None, options: dict[str, Any]
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _ApiCall[Answer]) -> Answer:
        with self._reaching():
            response = await self._http.request(call.method, call.path, **call.options)
        return call.read(response)

    @contextlib.asynccontextmanager
    async def _get_stream(self, path: str, **options: Any) -> AsyncIterator[httpx.Response]:
        async with self._http.stream("GET", path, **options) as response:
            if response.is_error:
                await response.aread()
                raise error_from_response(response)
            yield response

    async def submit(
        self,
        job_type: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        return await self._send(self._submit_call(job_type, params, idempotency_key))

    async def get(self, job_id: JobId) -> JobView:
        return await self._send(self._get_call(job_id))

    async def list(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return await self._send(self._list_call(job_type, state, limit, cursor))

    async def iter_jobs(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JobView]:
        cursor: str | None = None
        while True:
            page = await self.list(job_type=job_type, state=state, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: JobId) -> JobView:
        return await self._send(self._cancel_call(job_id))

    async def job_types(self) -> builtins.list[JobTypeInfo]:
        return await self._send(self._job_types_call())

    async def queues(self) -> builtins.list[QueueStatus]:
        return await self._send(self._queues_call())

    async def ready(self) -> Health:
        return await self._send(self._ready_call())

    async def upload_file(self, source: str | Path | bytes, name: str | None = None) -> FileStored:
        file_name = self._upload_name(source, name)
        if isinstance(source, bytes):
            return await self._send(self._upload_call(file_name, source))
        return await self._send(self._upload_call(file_name, _read_chunks(Path(source))))

    async def download_artifact(
        self, job_id: JobId, name: str, destination: str | Path | IO[bytes]
    ) -> int:
        with self._reaching():
            async with self._get_stream(self._artifact_path(job_id, name)) as response:
                with _landing(destination) as handle:
                    return await _acopy(response.aiter_bytes(CHUNK_BYTES), handle)

    async def events(
        self, job_id: JobId, last_event_id: int | str | None = None
    ) -> AsyncIterator[JobEvent]:
        """As `ConveyorClient.events`, for asyncio."""
        stream = self._event_stream(job_id, last_event_id)
        while stream.ongoing:
            with stream.attempt():
                async with self._get_stream(stream.path, **stream.options()) as response:
                    if stream.begin(response):
                        async for sse in EventSource(response).aiter_sse():
                            if (event := stream.take(sse)) is not None:
                                yield event
            if stream.ongoing:
                await asyncio.sleep(stream.reconnect_delay())

    async def wait(self, job_id: JobId) -> JobView:
        async for _ in self.events(job_id):
            pass
        return await self.get(job_id)


@contextlib.contextmanager
def _landing(destination: str | Path | IO[bytes]) -> Iterator[IO[bytes]]:
    """Where a download goes: the caller's file, or a partial file that replaces the path
    only when the block completes."""
    if not isinstance(destination, str | Path):
        yield destination
        return
    target = Path(destination)
    partial = target.with_name(f".{target.name}.part")
    try:
        with partial.open("wb") as handle:
            yield handle
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _copy(chunks: Iterator[bytes], handle: IO[bytes]) -> int:
    written = 0
    for chunk in chunks:
        handle.write(chunk)
        written += len(chunk)
    return written


async def _acopy(chunks: AsyncIterator[bytes], handle: IO[bytes]) -> int:
    written = 0
    async for chunk in chunks:
        await anyio.to_thread.run_sync(handle.write, chunk)
        written += len(chunk)
    return written


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(CHUNK_BYTES):
            yield chunk


__all__ = ["ApiError", "AsyncConveyorClient", "ConveyorClient"]
