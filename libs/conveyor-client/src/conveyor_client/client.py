"""`ConveyorClient` (sync) and `AsyncConveyorClient`: the gateway's `/v1` API, typed.

Both build the same requests and read the same answers (`_Requests`, which describes each
call as an `_ApiCall`); they differ only in how they send them. Errors are
`conveyor_client.errors` classes; models are the shared contract's (`conveyor_core.api_models`).
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
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
from httpx_sse import EventSource, SSEError
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
from conveyor_client.events import JobEvent, StreamPosition

Answer = TypeVar("Answer")
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


class _Requests:
    """What both clients share: configuration, requests, and reading the answers."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        timeout_s: float,
        idle_timeout_s: float,
        max_reconnects: int,
    ) -> None:
        settings = ClientSettings()
        self.base_url = (url or settings.url).rstrip("/")
        secret = api_key if api_key is not None else settings.api_key
        if secret is not None and not isinstance(secret, str):
            secret = secret.get_secret_value()
        self._headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._timeout = httpx.Timeout(timeout_s)
        self._stream_timeout = httpx.Timeout(timeout_s, read=idle_timeout_s)
        self.max_reconnects = max_reconnects

    def _client_options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self._headers, "timeout": self._timeout}

    def _connection_failed(self, error: httpx.TransportError) -> ConnectionFailed:
        return ConnectionFailed(self.base_url, str(error) or type(error).__name__)

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

    @staticmethod
    def _events_path(job_id: JobId) -> str:
        return f"/v1/jobs/{job_id}/events"

    def _events_options(self, position: StreamPosition) -> dict[str, Any]:
        return {"headers": position.headers(), "timeout": self._stream_timeout}


class ConveyorClient(_Requests):
    """The gateway's API, synchronously. Use as a context manager, or call `close()`.

    `url` and `api_key` default to CONVEYOR_URL and CONVEYOR_API_KEY.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout_s, idle_timeout_s, max_reconnects)
        self._http = httpx.Client(transport=transport, **self._client_options())

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
        try:
            response = self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error
        return call.read(response)

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
        try:
            with self._http.stream("GET", self._artifact_path(job_id, name)) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                if not isinstance(destination, str | Path):
                    return _copy(response.iter_bytes(CHUNK_BYTES), destination)
                target = Path(destination)
                partial = target.with_name(f".{target.name}.part")
                try:
                    with partial.open("wb") as handle:
                        written = _copy(response.iter_bytes(CHUNK_BYTES), handle)
                    partial.replace(target)
                finally:
                    partial.unlink(missing_ok=True)
                return written
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error

    def events(self, job_id: JobId, last_event_id: int | str | None = None) -> Iterator[JobEvent]:
        """The job's events until it ends, resuming with `Last-Event-ID` when the stream drops.

        Without `last_event_id` the first event is a `snapshot` of the whole job; with
        `last_event_id=0` the job's whole history is replayed instead. Gives up
        (ConnectionFailed, or the gateway's error) after `max_reconnects` attempts in a row
        that brought no event.
        """
        position = StreamPosition(last_event_id)
        failures = 0
        while not position.finished:
            try:
                with self._http.stream(
                    "GET", self._events_path(job_id), **self._events_options(position)
                ) as response:
                    if response.is_error:
                        response.read()
                        raise error_from_response(response)
                    if response.status_code == NO_CONTENT:  # resumed past the final event
                        return
                    for sse in EventSource(response).iter_sse():
                        event = position.advance(sse)
                        failures = 0
                        if event is not None:
                            yield event
            except (httpx.TransportError, Unavailable, ServerError) as error:
                failures += 1
                if failures > self.max_reconnects:
                    if isinstance(error, httpx.TransportError):
                        raise self._connection_failed(error) from error
                    raise
            except SSEError as error:
                raise ConveyorError(
                    f"{self.base_url} did not answer with an event stream: {error}"
                ) from error
            else:
                if position.finished:
                    return
                failures += 1  # closed before the job ended: resume
                if failures > self.max_reconnects:
                    raise ConveyorError(f"the event stream of job {job_id} keeps closing early")
            time.sleep(position.reconnect_delay(failures))

    def wait(self, job_id: JobId) -> JobView:
        """Follow the job's events until it ends; returns the finished job."""
        for _ in self.events(job_id):
            pass
        return self.get(job_id)


class AsyncConveyorClient(_Requests):
    """The gateway's API for asyncio code. Use with `async with`, or await `aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout_s, idle_timeout_s, max_reconnects)
        self._http = httpx.AsyncClient(transport=transport, **self._client_options())

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
        try:
            response = await self._http.request(call.method, call.path, **call.options)
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error
        return call.read(response)

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
        try:
            async with self._http.stream("GET", self._artifact_path(job_id, name)) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response)
                if not isinstance(destination, str | Path):
                    return await _acopy(response.aiter_bytes(CHUNK_BYTES), destination)
                target = Path(destination)
                partial = target.with_name(f".{target.name}.part")
                try:
                    with partial.open("wb") as handle:
                        written = await _acopy(response.aiter_bytes(CHUNK_BYTES), handle)
                    partial.replace(target)
                finally:
                    partial.unlink(missing_ok=True)
                return written
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error

    async def events(
        self, job_id: JobId, last_event_id: int | str | None = None
    ) -> AsyncIterator[JobEvent]:
        """As `ConveyorClient.events`, for asyncio."""
        position = StreamPosition(last_event_id)
        failures = 0
        while not position.finished:
            try:
                async with self._http.stream(
                    "GET", self._events_path(job_id), **self._events_options(position)
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response)
                    if response.status_code == NO_CONTENT:
                        return
                    async for sse in EventSource(response).aiter_sse():
                        event = position.advance(sse)
                        failures = 0
                        if event is not None:
                            yield event
            except (httpx.TransportError, Unavailable, ServerError) as error:
                failures += 1
                if failures > self.max_reconnects:
                    if isinstance(error, httpx.TransportError):
                        raise self._connection_failed(error) from error
                    raise
            except SSEError as error:
                raise ConveyorError(
                    f"{self.base_url} did not answer with an event stream: {error}"
                ) from error
            else:
                if position.finished:
                    return
                failures += 1
                if failures > self.max_reconnects:
                    raise ConveyorError(f"the event stream of job {job_id} keeps closing early")
            await asyncio.sleep(position.reconnect_delay(failures))

    async def wait(self, job_id: JobId) -> JobView:
        async for _ in self.events(job_id):
            pass
        return await self.get(job_id)


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
