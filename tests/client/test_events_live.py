"""`events()` and `wait()` against the gateway's real event stream."""

from __future__ import annotations

import pytest
from conveyor_client import (
    AsyncConveyorClient,
    ConveyorClient,
    JobState,
    JobView,
    NotFound,
    OutputEvent,
    ProgressEvent,
    StateEvent,
)
from support.clients import KeyedStack

TRAINING = {"dataset": "synthetic", "n_samples": 8000, "model": "random_forest"}


def test_events_follow_a_training_from_snapshot_to_success(stack_with_keys: KeyedStack):
    url, key = stack_with_keys.stack.base_url, stack_with_keys.user_key
    with ConveyorClient(url, key) as conveyor:
        job = conveyor.submit("ml.train", TRAINING)
        events = list(conveyor.events(job.id))
        finished = conveyor.get(job.id)

    first, *rest = events
    assert first.kind == "snapshot" and isinstance(first.data, JobView)
    assert first.data.id == job.id
    progress = [e.data.progress for e in rest if isinstance(e.data, ProgressEvent)]
    assert progress == sorted(progress) and progress, "progress never rose"
    last = events[-1]
    assert isinstance(last.data, StateEvent) and last.final_state is JobState.SUCCEEDED
    assert last.data.result == finished.result
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # Resuming from the middle gives exactly the rest, without a snapshot.
    middle = len(events) // 2
    with ConveyorClient(url, key) as conveyor:
        resumed = list(conveyor.events(job.id, last_event_id=events[middle].id))
        assert [e.id for e in resumed] == ids[middle + 1 :]
        # Past the final event: nothing more (the gateway's 204).
        assert list(conveyor.events(job.id, last_event_id=ids[-1])) == []


def test_wait_returns_the_finished_job_and_output_lines_arrive(stack_with_keys: KeyedStack):
    url, key = stack_with_keys.stack.base_url, stack_with_keys.user_key
    with ConveyorClient(url, key) as conveyor:
        job = conveyor.submit("cmd.run", {"command": "echo", "args": ["one", "two"]})
        assert conveyor.wait(job.id).state is JobState.SUCCEEDED
        replay = list(conveyor.events(job.id, last_event_id=0))
        with pytest.raises(NotFound):
            list(conveyor.events("00000000-0000-0000-0000-000000000000"))
    lines = [(e.data.stream, e.data.line) for e in replay if isinstance(e.data, OutputEvent)]
    assert lines == [("stdout", "one two")]


@pytest.mark.anyio
async def test_the_async_client_follows_and_waits(stack_with_keys: KeyedStack):
    url, key = stack_with_keys.stack.base_url, stack_with_keys.user_key
    async with AsyncConveyorClient(url, key) as conveyor:
        job = await conveyor.submit("ml.train", TRAINING)
        kinds = [event.kind async for event in conveyor.events(job.id)]
        assert kinds[0] == "snapshot" and kinds[-1] == "state"
        finished = await conveyor.wait(job.id)  # already over: its snapshot ends the stream
    assert finished.state is JobState.SUCCEEDED
