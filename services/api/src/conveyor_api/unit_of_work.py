"""How the gateway reaches the job store: one runner of units of work, for every caller.

A unit is a plain function of a SQLAlchemy `Connection` running Core statements (the
gateway's are in conveyor_core/store/gateway_ops.py), so the same code serves both stores:

- SQLite runs every unit in one dedicated thread that owns the gateway's one connection.
  A unit is one hand-over between the event loop and that thread, however many DBAPI
  calls it makes (through aiosqlite each call is a hand-over of its own: cursor, execute,
  fetch, close, commit; under load each waits for the GIL and for a CPU).
- PostgreSQL runs units on the event loop (psycopg's async driver, through `run_sync`);
  reads in autocommit, so a lookup is one round trip, not BEGIN, SELECT and ROLLBACK.

The routes' hot paths (service.py), API keys (auth.py), event streams (event_stream.py,
event_hub.py), maintenance and the readiness check all run their statements here. Only
the event hub's `LISTEN` is outside: it holds one connection of its own for as long as
the process lives, which a unit of work never does.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeVar

from conveyor_core.store.engine import make_async_engine, make_sync_engine, sync_url
from conveyor_core.store.gateway_ops import Work
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

GIL_SWITCH_INTERVAL_S = 0.0005
T = TypeVar("T")


class WorkRunner:
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


class ThreadRunner(WorkRunner):
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


class AsyncRunner(WorkRunner):
    """PostgreSQL: units on the event loop, over the gateway's async engine and its pool."""

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
        await self.engine.dispose()


def open_work_runner(url: str) -> WorkRunner:
    """SQLite: one thread and one connection; otherwise an async engine and its pool."""
    if sync_url(url).get_backend_name() == "sqlite":
        # One connection (StaticPool), only ever used from the runner's thread.
        return ThreadRunner(make_sync_engine(url, poolclass=StaticPool))
    return AsyncRunner(make_async_engine(url))
