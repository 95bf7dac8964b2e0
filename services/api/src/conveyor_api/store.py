"""How the gateway's hot paths reach the job store: a unit of work per hand-over.

A unit is a plain function of a SQLAlchemy `Connection` running Core statements, so the
same code serves both stores:

- SQLite runs every unit in one dedicated thread that owns the gateway's one connection.
  A unit is one hand-over between the event loop and that thread, however many DBAPI
  calls it makes (through aiosqlite each call is a hand-over of its own: cursor, execute,
  fetch, close, commit; under load each waits for the GIL and for a CPU).
- PostgreSQL runs units on the event loop (psycopg's async driver, through `run_sync`);
  reads in autocommit, so a lookup is one round trip, not BEGIN, SELECT and ROLLBACK.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeVar

from conveyor_core.store.engine import make_sync_engine, sync_url
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

GIL_SWITCH_INTERVAL_S = 0.0005
T = TypeVar("T")
Work = Callable[[Connection], T]


class GatewayStore:
    """Runs units of work: `read` outside a transaction, `write` inside one.

    A pooled connection the server closed since its last use (a PostgreSQL restart, an
    idle timeout) fails the first statement sent on it, before anything ran; SQLAlchemy
    then replaces every pooled connection, and the unit runs once more. A write whose
    COMMIT was cut off may have committed: only retry writes that cannot double anything
    (see JobService).
    """

    async def read(self, work: Work[T]) -> T:
        return await self._retrying(self._read, work, retry=True)

    async def write(self, work: Work[T], *, retry_on_disconnect: bool = True) -> T:
        return await self._retrying(self._write, work, retry=retry_on_disconnect)

    async def close(self) -> None:
        raise NotImplementedError

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    @staticmethod
    async def _retrying(run: Callable[[Work[T]], Awaitable[T]], work: Work[T], retry: bool) -> T:
        try:
            return await run(work)
        except DBAPIError as error:
            if not (retry and error.connection_invalidated):
                raise
        return await run(work)


class ThreadStore(GatewayStore):
    """SQLite: one connection, owned by one thread, every unit run there in turn."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        # Each SQLite call releases the GIL; taking it back waits for the busy event loop
        # thread to give it up, every 5 ms by default: several waits per unit of work.
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))

    async def _read(self, work: Work[T]) -> T:
        return await self._in_thread(functools.partial(self._call, self.engine.connect, work))

    async def _write(self, work: Work[T]) -> T:
        return await self._in_thread(functools.partial(self._call, self.engine.begin, work))

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    @staticmethod
    def _call(connect: Callable[[], AbstractContextManager[Connection]], work: Work[T]) -> T:
        with connect() as connection:
            return work(connection)

    async def close(self) -> None:
        await self._in_thread(self.engine.dispose)
        self._thread.shutdown(wait=True)


class AsyncStore(GatewayStore):
    """PostgreSQL: units on the event loop, over the gateway's async engine and pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _read(self, work: Work[T]) -> T:
        async with self._autocommit.connect() as connection:
            return await connection.run_sync(work)

    async def _write(self, work: Work[T]) -> T:
        async with self.engine.begin() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        pass  # the engine is the gateway's, disposed with it


def open_gateway_store(url: str, engine: AsyncEngine) -> GatewayStore:
    """SQLite: its own thread and connection; otherwise the gateway's async engine."""
    if sync_url(url).get_backend_name() == "sqlite":
        # One connection (StaticPool), only ever used from the store thread.
        return ThreadStore(make_sync_engine(url, poolclass=StaticPool))
    return AsyncStore(engine)
