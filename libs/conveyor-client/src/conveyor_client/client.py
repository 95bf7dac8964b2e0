"""`ConveyorClient` (sync) and `AsyncConveyorClient`: the gateway's `/v1` API, typed.

Both build the same requests and read the same answers (`_Requests`); they differ only in
how they send them. Errors are `conveyor_client.errors` classes; models are the shared
contract's (`conveyor_core.api_models`).
"""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

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
from pydantic import BaseModel, TypeAdapter

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

Model = TypeVar("Model", bound=BaseModel)
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
    def _submission(
        job_type: str, params: dict[str, Any] | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return {"json": {"type": job_type, "params": params or {}}, "headers": headers}

    @staticmethod
    def _list_query(
        job_type: str | None, state: JobState | str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        query: dict[str, Any] = {"limit": limit}
        if job_type:
            query["type"] = job_type
        if state:
            query["state"] = str(state)
        if cursor:
            query["cursor"] = cursor
        return query

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.is_error:
            raise error_from_response(response)
        return response

    @staticmethod
    def _health(response: httpx.Response) -> Health:
        # /readyz answers 503 with the same body when a dependency is down: not an error here.
        if response.status_code in (200, 503):
            return Health.model_validate_json(response.content)
        raise error_from_response(response)


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

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error
        return self._checked(response)

    def _model(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    def submit(
        self,
        job_type: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        """Queue a job; returns once it is durably queued (the gateway's 202)."""
        request = self._submission(job_type, params, idempotency_key)
        return self._model(JobAccepted, "POST", "/v1/jobs", **request)

    def get(self, job_id: JobId) -> JobView:
        return self._model(JobView, "GET", f"/v1/jobs/{job_id}")

    def list(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back for the next page."""
        query = self._list_query(job_type, state, limit, cursor)
        return self._model(JobPage, "GET", "/v1/jobs", params=query)

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
        return self._model(JobView, "POST", f"/v1/jobs/{job_id}/cancel")

    def job_types(self) -> builtins.list[JobTypeInfo]:
        return _JOB_TYPES.validate_json(self._request("GET", "/v1/job-types").content)

    def queues(self) -> builtins.list[QueueStatus]:
        """Each job type's queue depth and consumers (admin keys only)."""
        return _QUEUES.validate_json(self._request("GET", "/v1/queues").content)

    def ready(self) -> Health:
        """The gateway's readiness: its broker and job store checks."""
        try:
            return self._health(self._http.get("/readyz"))
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error

    def upload_file(self, source: str | Path | bytes, name: str | None = None) -> FileStored:
        """Put an input file in the artifact store; pass the returned `path` as a `source`."""
        if isinstance(source, bytes):
            if name is None:
                raise ValueError("name is required when uploading bytes")
            return self._model(FileStored, "PUT", f"/v1/files/{name}", content=source)
        path = Path(source)
        with path.open("rb") as handle:
            return self._model(FileStored, "PUT", f"/v1/files/{name or path.name}", content=handle)

    def download_artifact(
        self, job_id: JobId, name: str, destination: str | Path | IO[bytes]
    ) -> int:
        """Stream an artifact to a path or a binary file; returns the bytes written.

        A path is written next to itself first and renamed when complete, so a failed
        download never leaves a truncated file under the requested name.
        """
        url = f"/v1/jobs/{job_id}/artifacts/{name}"
        try:
            with self._http.stream("GET", url) as response:
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
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=position.headers(),
                    timeout=self._stream_timeout,
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

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error
        return self._checked(response)

    async def _model(self, model: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        response = await self._request(method, path, **kwargs)
        return model.model_validate_json(response.content)

    async def submit(
        self,
        job_type: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        request = self._submission(job_type, params, idempotency_key)
        return await self._model(JobAccepted, "POST", "/v1/jobs", **request)

    async def get(self, job_id: JobId) -> JobView:
        return await self._model(JobView, "GET", f"/v1/jobs/{job_id}")

    async def list(
        self,
        *,
        job_type: str | None = None,
        state: JobState | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        query = self._list_query(job_type, state, limit, cursor)
        return await self._model(JobPage, "GET", "/v1/jobs", params=query)

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
        return await self._model(JobView, "POST", f"/v1/jobs/{job_id}/cancel")

    async def job_types(self) -> builtins.list[JobTypeInfo]:
        response = await self._request("GET", "/v1/job-types")
        return _JOB_TYPES.validate_json(response.content)

    async def queues(self) -> builtins.list[QueueStatus]:
        response = await self._request("GET", "/v1/queues")
        return _QUEUES.validate_json(response.content)

    async def ready(self) -> Health:
        try:
            return self._health(await self._http.get("/readyz"))
        except httpx.TransportError as error:
            raise self._connection_failed(error) from error

    async def upload_file(self, source: str | Path | bytes, name: str | None = None) -> FileStored:
        if isinstance(source, bytes):
            if name is None:
                raise ValueError("name is required when uploading bytes")
            return await self._model(FileStored, "PUT", f"/v1/files/{name}", content=source)
        path = Path(source)
        return await self._model(
            FileStored, "PUT", f"/v1/files/{name or path.name}", content=_read_chunks(path)
        )

    async def download_artifact(
        self, job_id: JobId, name: str, destination: str | Path | IO[bytes]
    ) -> int:
        url = f"/v1/jobs/{job_id}/artifacts/{name}"
        try:
            async with self._http.stream("GET", url) as response:
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
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=position.headers(),
                    timeout=self._stream_timeout,
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
