"""Wakes this gateway process's event streams when their job has new events.

Events are rows (`job_events`); the hub only says "look again". One hub per process:

- PostgreSQL: ONE `LISTEN conveyor_job_events` connection (psycopg async). Whoever stores
  an event sends `pg_notify` with the job id in the same transaction, and the hub wakes
  the streams of that job. After a reconnect it wakes every stream, since notifications
  sent while it was away are lost (the rows are not).
- SQLite (no NOTIFY): ONE poll loop, one query per CONVEYOR_EVENTS_POLL_INTERVAL_S for
  all streams, following the store-wide event id.

On both, every CONVEYOR_EVENTS_KEEPALIVE_S one query finds the streams' jobs that are
final, so a stream ends even when its job finished without a final event (a worker of an
older release during an upgrade).

The queries run on the gateway's unit-of-work runner like every other; the `LISTEN`
connection is the one the hub opens itself: it is held for the life of the process and
receives notifications between statements, which a pooled unit of work never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from conveyor_core.event_contract import NOTIFY_CHANNEL
from conveyor_core.settings import Settings
from conveyor_core.store import gateway_ops
from sqlalchemy.engine import make_url

from conveyor_api.metrics import EVENT_STREAMS_OPEN
from conveyor_api.unit_of_work import WorkRunner

log = logging.getLogger("conveyor.api.events")
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 5.0)
RECONCILE_CHUNK = 500


class StreamsExhausted(Exception):
    """This gateway process already holds CONVEYOR_EVENTS_MAX_STREAMS open streams."""


@dataclass(eq=False)
class Subscription:
    """One open stream's doorbell."""

    job_id: uuid.UUID
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the job is final: the stream checks whether it must end without an event.
    check_final: bool = False
    closing: bool = False  # the server is shutting down: end the stream now

    def wake(self, check_final: bool = False) -> None:
        self.check_final |= check_final
        self.wakeup.set()


class StreamSlot:
    """One of the process's CONVEYOR_EVENTS_MAX_STREAMS; `release` may be called twice."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._hub.open_streams -= 1
            EVENT_STREAMS_OPEN.dec()


class EventHub:
    def __init__(self, runner: WorkRunner, settings: Settings, database_url: str) -> None:
        self.runner = runner
        self.settings = settings
        self.database_url = make_url(database_url)
        self.open_streams = 0
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}

    # --- streams
    def open_stream(self) -> StreamSlot:
        if self.open_streams >= self.settings.events_max_streams:
            raise StreamsExhausted(f"this gateway already serves {self.open_streams} event streams")
        self.open_streams += 1
        EVENT_STREAMS_OPEN.inc()
        return StreamSlot(self)

    @contextlib.contextmanager
    def subscribe(self, job_id: uuid.UUID) -> Iterator[Subscription]:
        subscription = Subscription(job_id)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(job_id, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscriptions.pop(job_id, None)

    def wake(self, job_id: uuid.UUID, check_final: bool = False) -> None:
        for subscription in self._subscriptions.get(job_id, ()):
            subscription.wake(check_final)

    def wake_all(self) -> None:
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.wake()

    # --- the one background task of this process
    async def run_forever(self) -> None:
        if self.database_url.get_backend_name() == "postgresql":
            await self._listen()
        else:
            await self._poll()

    async def _listen(self) -> None:
        dsn = self.database_url.set(drivername="postgresql").render_as_string(hide_password=False)
        failures = 0
        while True:
            try:
                # TCP keepalives: a connection cut without a reset is noticed within ~30 s.
                async with await psycopg.AsyncConnection.connect(
                    dsn,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                ) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if failures:
                        log.info("listening for job events again")
                    failures = 0
                    self.wake_all()  # what was stored while nobody listened
                    await self._dispatch(connection)
            except Exception:  # the store restarting, or a failover: listen again
                delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
                failures += 1
                log.warning(
                    "event listener lost the job store; retrying in %.1fs", delay, exc_info=True
                )
                await asyncio.sleep(delay)

    async def _dispatch(self, connection: psycopg.AsyncConnection[object]) -> None:
        while True:
            async for notification in connection.notifies(timeout=self.settings.events_keepalive_s):
                with contextlib.suppress(ValueError):
                    self.wake(uuid.UUID(notification.payload))
            await self._reconcile()

    async def _poll(self) -> None:
        cursor: int | None = None  # the highest job_events.id looked at
        next_reconcile = time.monotonic() + self.settings.events_keepalive_s
        while True:
            await asyncio.sleep(self.settings.events_poll_interval_s)
            if not self._subscriptions:
                cursor = None  # idle: no query at all
                continue
            try:
                if cursor is None:
                    cursor = await self.runner.read(gateway_ops.last_event_id)
                    self.wake_all()  # events stored before the cursor existed
                    continue
                changed = await self.runner.read(gateway_ops.jobs_with_events_after(cursor))
                for job in changed:
                    cursor = max(cursor, job.last_id)
                    self.wake(job.job_id)
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + self.settings.events_keepalive_s
                    await self._reconcile()
            except Exception:  # the store may be busy or restarting: the next round retries
                log.warning("event poll failed", exc_info=True)

    async def _reconcile(self) -> None:
        """Wake, to check, the streams whose job is final."""
        try:
            job_ids = list(self._subscriptions)
            for start in range(0, len(job_ids), RECONCILE_CHUNK):
                chunk = job_ids[start : start + RECONCILE_CHUNK]
                for job_id in await self.runner.read(gateway_ops.final_among(chunk)):
                    self.wake(job_id, check_final=True)
        except Exception:
            log.warning("event streams' final-state check failed", exc_info=True)
