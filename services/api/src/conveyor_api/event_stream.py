"""One client's `GET /v1/jobs/{id}/events`: where it starts, what it sends, when it ends.

It starts with a `snapshot` (no Last-Event-ID) or right after the client's Last-Event-ID,
sends the job's stored events in order, sleeps until the hub rings, and ends after the
event that carries a final state. The SSE id of an event is its `job_events.seq`; a
snapshot's id is the job's `event_seq` when it was read, so resuming from either skips
nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from enum import Enum
from typing import Any

import anyio
from conveyor_core.event_contract import EventKind, OutputEvent, ProgressEvent, StateEvent
from conveyor_core.states import JobState
from conveyor_core.store import gateway_ops
from conveyor_core.store.gateway_ops import EventRow, JobRow
from sse_starlette import ServerSentEvent

from conveyor_api.event_hub import EventHub, Subscription
from conveyor_api.schemas import JobView
from conveyor_api.unit_of_work import WorkRunner

READ_BATCH = 500
SEPARATOR = "\n"


class _Ending(Enum):
    KEEP_WAITING = "keep_waiting"  # not final yet
    READ_AGAIN = "read_again"  # final, and events the stream has not read are there


def sse(kind: EventKind, event_id: int, data: str) -> ServerSentEvent:
    return ServerSentEvent(data, event=kind.value, id=str(event_id), sep=SEPARATOR)


def snapshot(job: JobRow) -> ServerSentEvent:
    view = JobView.model_validate(job).model_dump_json()
    return sse(EventKind.SNAPSHOT, job.event_seq, view)


def state_payload(
    state: JobState, attempts: int, error: str | None, result: Any, at: datetime
) -> str:
    # A failed job may keep its result too (a command's exit code and output).
    event = StateEvent(state=state, attempts=attempts, error=error, result=result, at=at)
    return event.model_dump_json(exclude=None if result is not None else {"result"})


async def _ring_on(shutdown: anyio.Event, subscription: Subscription) -> None:
    await shutdown.wait()
    subscription.closing = True
    subscription.wakeup.set()


def is_final(event: EventRow) -> bool:
    return event.kind == EventKind.STATE and JobState(event.data["state"]).is_final


class JobEventStream:
    def __init__(self, runner: WorkRunner, hub: EventHub) -> None:
        self.runner = runner
        self.hub = hub

    async def has_ended_for(self, job: JobRow, last_event_id: int) -> bool:
        """True when a client that saw `last_event_id` already has `job`'s final event."""
        if not JobState(job.state).is_final or last_event_id < job.event_seq:
            return False
        if last_event_id > job.event_seq:
            return True  # it had the final event derived for a job that ended without one
        latest = await self.runner.read(gateway_ops.event(job.id, job.event_seq))
        return latest is not None and is_final(latest)

    async def follow(
        self, job: JobRow, last_event_id: int | None, shutdown: anyio.Event
    ) -> AsyncIterator[ServerSentEvent]:
        """The events of `job` (as read for the request) for one client, until it ends.

        `shutdown` is set when the server stops: the stream then ends cleanly, and the
        client resumes from its Last-Event-ID on another gateway.
        """
        with self.hub.subscribe(job.id) as subscription:
            ring_on_shutdown = asyncio.create_task(_ring_on(shutdown, subscription))
            try:
                if last_event_id is None:
                    yield snapshot(job)
                    if JobState(job.state).is_final:
                        return
                    last = job.event_seq
                else:
                    last = last_event_id
                    # It may have finished while the client was away, its history pruned.
                    subscription.check_final = True
                async for event in self._from(job.id, last, subscription):
                    yield event
            finally:
                ring_on_shutdown.cancel()

    async def _from(
        self, job_id: uuid.UUID, last: int, subscription: Subscription
    ) -> AsyncIterator[ServerSentEvent]:
        while not subscription.closing:
            subscription.wakeup.clear()  # before reading: a ring during the read is kept
            check_final, subscription.check_final = subscription.check_final, False
            events = await self._events_after(job_id, last, READ_BATCH)
            for event in events:
                yield await self._render(job_id, event)
                last = event.seq
                if is_final(event):
                    return
            if len(events) == READ_BATCH:
                subscription.check_final |= check_final
                continue
            if check_final:
                ending = await self._ending(job_id, last)
                if ending is _Ending.READ_AGAIN:
                    subscription.wake(check_final=True)
                elif isinstance(ending, list):
                    for last_words in ending:
                        yield last_words
                    return
            await subscription.wakeup.wait()

    async def _ending(self, job_id: uuid.UUID, last: int) -> _Ending | list[ServerSentEvent]:
        """How a stream that has sent every stored event up to `last` ends, if it does.

        Normally its job's final event ends it before this is asked. This covers a job
        that is final while that event is not (or no longer) there to send.
        """
        job = await self.runner.read(gateway_ops.job(job_id))
        if job is None:
            return []  # the row is gone: nothing will ever come
        if not JobState(job.state).is_final:
            return _Ending.KEEP_WAITING
        if job.event_seq > last:
            if await self._events_after(job_id, last, 1):
                return _Ending.READ_AGAIN  # stored after this stream last read
            return [snapshot(job)]  # deleted by retention: the snapshot replaces them
        if await self.has_ended_for(job, last):
            return []
        # The job ended without a final event (a worker of an older release wrote it): the
        # event is derived from the row, numbered as the next one would be, the same on
        # every gateway.
        final = state_payload(
            JobState(job.state),
            job.attempts,
            job.error,
            job.result,
            job.finished_at or job.updated_at,
        )
        return [sse(EventKind.STATE, job.event_seq + 1, final)]

    async def _events_after(self, job_id: uuid.UUID, seq: int, limit: int) -> list[EventRow]:
        return await self.runner.read(gateway_ops.events_after(job_id, seq, limit))

    async def _render(self, job_id: uuid.UUID, event: EventRow) -> ServerSentEvent:
        kind = EventKind(event.kind)
        data = event.data
        if kind is EventKind.STATE:
            state = JobState(data["state"])
            result = None
            if state is JobState.SUCCEEDED:  # the result lives on the job, not in the event
                result = await self.runner.read(gateway_ops.job_result(job_id))
            payload = state_payload(
                state, data["attempts"], data["error"], result, event.created_at
            )
        elif kind is EventKind.PROGRESS:
            payload = ProgressEvent(
                progress=data["progress"], at=event.created_at
            ).model_dump_json()
        else:
            payload = OutputEvent(
                stream=data["stream"], line=data["line"], at=event.created_at
            ).model_dump_json()
        return sse(kind, event.seq, payload)
