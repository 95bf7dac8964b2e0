"""Group commit's own logic: who shares a batch, who gets which result, what an error does."""

from __future__ import annotations

import asyncio

import pytest
from conveyor_api.batching import BackgroundMarks, Batcher


class Recorder:
    """A batch function that records each batch and can be held open or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError(f"batch {items} failed")
        return [item * 10 for item in items]


def test_callers_arriving_during_a_batch_share_the_next_one_and_get_their_own_results():
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[int, int] = Batcher(recorder)
        recorder.release.clear()
        first = asyncio.create_task(batcher.run(1))
        await asyncio.sleep(0)  # the first batch starts at once, alone
        await asyncio.sleep(0)
        later = [asyncio.create_task(batcher.run(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await first == 10
        assert [await task for task in later] == [20, 30, 40]
        assert recorder.batches == [[1], [2, 3, 4]]

    asyncio.run(scenario())


def test_a_batch_never_exceeds_its_maximum():
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[int, int] = Batcher(recorder, max_batch=3)
        results = await asyncio.gather(*(batcher.run(n) for n in range(7)))
        assert results == [n * 10 for n in range(7)]
        assert [len(batch) for batch in recorder.batches] == [3, 3, 1]

    asyncio.run(scenario())


def test_a_failed_batch_fails_its_callers_only_and_the_next_batch_runs():
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[int, int] = Batcher(recorder)
        recorder.release.clear()
        recorder.fail_next = 1
        doomed = [asyncio.create_task(batcher.run(n)) for n in (1, 2)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        fine = asyncio.create_task(batcher.run(3))  # waits for the next batch
        await asyncio.sleep(0)
        recorder.release.set()
        for task in doomed:
            with pytest.raises(RuntimeError, match="failed"):
                await task
        assert await fine == 30
        assert recorder.batches == [[1, 2], [3]]

    asyncio.run(scenario())


def test_a_caller_that_gives_up_does_not_cancel_the_others_in_its_batch():
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[int, int] = Batcher(recorder)
        recorder.release.clear()
        leaving = asyncio.create_task(batcher.run(1))
        staying = asyncio.create_task(batcher.run(2))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        leaving.cancel()
        recorder.release.set()
        assert await staying == 20
        assert recorder.batches == [[1, 2]]  # the cancelled caller's item was still written

    asyncio.run(scenario())


def test_background_marks_are_written_shortly_after_in_one_batch():
    async def scenario() -> None:
        written: list[list[str]] = []

        async def write(keys: list[str]) -> None:
            written.append(keys)

        marks: BackgroundMarks[str] = BackgroundMarks(write, delay_s=0.05)
        marks.add("a")  # returns at once
        marks.add_all(["b", "c"])
        await asyncio.sleep(0.01)
        assert written == []  # still waiting for a transaction to carry them
        assert marks.pending == {"a", "b", "c"}
        await asyncio.sleep(0.1)
        assert written == [["a", "b", "c"]]
        assert marks.pending == set()

    asyncio.run(scenario())


def test_marks_another_transaction_carries_are_not_written_again_unless_it_failed():
    async def scenario() -> None:
        written: list[str] = []

        async def write(keys: list[str]) -> None:
            written.extend(keys)

        marks: BackgroundMarks[str] = BackgroundMarks(write, delay_s=0.01)
        marks.add_all(["a", "b"])
        carried = marks.take()
        assert carried == ["a", "b"]
        assert marks.pending == {"a", "b"}  # not committed yet
        marks.taken(carried, written=True)
        marks.add("c")
        failed = marks.take()
        marks.taken(failed, written=False)  # that transaction rolled back: queued again
        assert marks.pending == {"c"}
        await marks.flush()
        assert written == ["c"]
        assert marks.pending == set()

    asyncio.run(scenario())


def test_background_marks_survive_a_store_outage_and_say_what_is_not_written():
    async def scenario() -> None:
        outage = {"left": 2}
        written: list[str] = []

        async def write(keys: list[str]) -> None:
            if outage["left"]:
                outage["left"] -= 1
                raise ConnectionError("job store down")
            written.extend(keys)

        marks: BackgroundMarks[str] = BackgroundMarks(write, delay_s=0, retry_after_s=0.01)
        marks.add_all(["a", "b"])
        await asyncio.sleep(0.005)
        assert outage["left"] < 2  # the first write failed...
        assert marks.pending == {"a", "b"}  # ...so they are not written: repairs skip them
        await marks.flush()
        assert written == ["a", "b"]
        assert marks.pending == set()

    asyncio.run(scenario())


def test_flush_succeeds_while_new_marks_keep_arriving():
    # Under load, jobs are confirmed between the write and flush() resuming: that used to
    # raise, and the maintenance round calling flush() stopped there, every round.
    async def scenario() -> None:
        written: list[str] = []

        async def write(keys: list[str]) -> None:
            written.extend(keys)
            if "late" not in written:
                asyncio.get_running_loop().call_soon(marks.add, "late")

        marks: BackgroundMarks[str] = BackgroundMarks(write, delay_s=0.01)
        marks.add("a")
        await marks.flush()
        assert written == ["a"]
        assert marks.pending == {"late"}  # left to the background writer
        await asyncio.sleep(0.05)
        assert written == ["a", "late"]

    asyncio.run(scenario())


def test_flush_raises_when_the_marks_cannot_be_written():
    async def scenario() -> None:
        async def write(keys: list[str]) -> None:
            raise ConnectionError("job store down")

        marks: BackgroundMarks[str] = BackgroundMarks(write, retry_after_s=0.001)
        marks.add("a")
        with pytest.raises(RuntimeError, match="could not be written"):
            await marks.flush()
        assert marks.pending == {"a"}  # kept for the next try

    asyncio.run(scenario())


def test_a_batch_failing_on_one_item_is_run_again_item_by_item():
    class RefusesThree(Recorder):
        async def __call__(self, items: list[int]) -> list[int]:
            self.batches.append(list(items))
            await self.release.wait()
            if 3 in items:
                raise ValueError("the store refused item 3")
            return [item * 10 for item in items]

    async def scenario() -> None:
        recorder = RefusesThree()
        batcher: Batcher[int, int] = Batcher(
            recorder, isolate=lambda error: isinstance(error, ValueError)
        )
        recorder.release.clear()
        first = asyncio.create_task(batcher.run(0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        shared = [asyncio.create_task(batcher.run(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await first == 0
        assert await shared[0] == 20
        with pytest.raises(ValueError, match="item 3"):
            await shared[1]
        assert await shared[2] == 40
        assert recorder.batches == [[0], [2, 3, 4], [2], [3], [4]]

    asyncio.run(scenario())


def test_an_error_not_isolated_fails_the_whole_batch_without_a_retry():
    async def scenario() -> None:
        recorder = Recorder()
        batcher: Batcher[int, int] = Batcher(
            recorder, isolate=lambda error: isinstance(error, ValueError)
        )
        recorder.release.clear()
        recorder.fail_next = 1  # a RuntimeError: the store itself, not one row
        first = asyncio.create_task(batcher.run(1))
        second = asyncio.create_task(batcher.run(2))
        await asyncio.sleep(0)
        recorder.release.set()
        for task in (first, second):
            with pytest.raises(RuntimeError):
                await task
        assert recorder.batches == [[1, 2]]

    asyncio.run(scenario())
