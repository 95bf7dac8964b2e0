"""Group commit: concurrent requests share one job store round trip instead of one each.

Under load, most of a submission's cost is the transaction around its one-row INSERT
(and, on SQLite, the thread hops of every statement); most of a status poll's is the
connection checkout around its one-row SELECT. A batcher lets every request that arrives
while a batch is in flight wait for the next one, which then carries all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger("conveyor.api.batching")

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


class Batcher(Generic[T, R]):
    """Runs `run_batch(items)` for everything queued while the previous batch ran.

    `run(item)` returns the item's result once the batch holding it is done, or raises the
    batch's error. There is no timer: an idle batcher starts a batch at once (no added
    latency), and under load a batch is whatever queued meanwhile, so its size follows the
    load. `run_batch` returns one result per item, in order.

    A batch that fails with an error `isolate` says may belong to one item (a row the
    database refuses) is run again item by item, so only that item's caller gets it.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = 256,
        isolate: Callable[[Exception], bool] = lambda error: False,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._isolate = isolate
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # A caller that gives up (its client left) does not cancel the batch: the flusher
        # is its own task, and the other callers' items are in the same transaction.
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._run_batch([item for item, _ in batch])
            except Exception as error:
                if len(batch) > 1 and self._isolate(error):
                    for one in batch:
                        await self._settle([one])
                else:
                    self._fail(batch, error)
                continue
            self._succeed(batch, results)

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run_batch([item for item, _ in batch])
        except Exception as error:
            self._fail(batch, error)
        else:
            self._succeed(batch, results)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], error: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    @staticmethod
    def _succeed(batch: list[tuple[T, asyncio.Future[R]]], results: list[R]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class BackgroundMarks(Generic[K]):
    """Writes a set of marks in the background, in batches, retrying while the store is down.

    `add` returns at once: for writes no caller needs to wait for (a row's `dispatched_at`
    once its message is confirmed). Another transaction may carry queued marks along
    (`take`, then `taken`), which saves the store a commit; the background writer only
    writes what nobody took within `delay_s`. `flush` writes what is queued now, and
    `pending` tells what is not written yet.
    """

    def __init__(
        self,
        write: Callable[[list[K]], Awaitable[None]],
        *,
        delay_s: float = 0.05,
        max_batch: int = 500,
        retry_after_s: float = 1.0,
    ) -> None:
        self._write = write
        self._delay_s = delay_s
        self._max_batch = max_batch
        self._retry_after_s = retry_after_s
        self._queued: list[K] = []
        self._writing: list[K] = []
        self._riding: list[K] = []  # taken by another transaction, not committed yet
        self._writer: asyncio.Task[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> set[K]:
        return {*self._queued, *self._writing, *self._riding}

    def add(self, key: K) -> None:
        self._queued.append(key)
        if self._timer is None and not self._writer_running:
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._start)

    def add_all(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)

    def take(self) -> list[K]:
        """Hand the queued marks (up to a batch) to a transaction that writes them."""
        taken = self._queued[: self._max_batch]
        del self._queued[: self._max_batch]
        self._riding.extend(taken)
        return taken

    def taken(self, keys: list[K], *, written: bool) -> None:
        """What became of marks from `take`: written, or queued again."""
        for key in keys:
            self._riding.remove(key)
        if not written:
            self.add_all(keys)

    async def flush(self) -> None:
        """Write every queued mark now (raises if they cannot be written).

        Marks another transaction carries are not waited for: they are in `pending`; nor
        are marks added once the write is done (under load there always are some), which
        the background writer takes.
        """
        if self._writer_running:
            assert self._writer is not None
            await asyncio.shield(self._writer)
        if not self._queued:
            return
        self._start(retries=0)
        assert self._writer is not None
        if not await asyncio.shield(self._writer):
            raise RuntimeError(f"{len(self._queued)} mark(s) could not be written")

    @property
    def _writer_running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def _start(self, retries: int = 5) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queued and not self._writer_running:
            self._writer = asyncio.create_task(self._drain(retries))

    async def _drain(self, retries: int) -> bool:
        """Write until nothing is queued (True), or give up after `retries` failures (False)."""
        failures = 0
        while self._queued:
            self._writing = self._queued[: self._max_batch]
            del self._queued[: self._max_batch]
            try:
                await self._write(self._writing)
            except Exception:
                self._queued[:0] = self._writing  # keep them, in order, for the next try
                failures += 1
                if failures > retries:
                    log.warning("job store unavailable: %d mark(s) wait", len(self._queued))
                    return False
                log.warning("writing %d mark(s) failed; retrying", len(self._writing))
                await asyncio.sleep(self._retry_after_s * failures)
            finally:
                self._writing = []
        return True
