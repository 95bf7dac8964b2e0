"""Concurrent submissions share transactions (group commit) and lose none of the guarantees.

The stack runs no data worker, so every `data.transform` message stays in its queue where
it can be counted: one per accepted job, none lost, none published twice by the repairs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conveyor_core.store import Job
from conveyor_core.store.engine import make_sync_engine
from kombu import Connection
from sqlalchemy import select
from support.stack import Stack, running_stack

DATA_QUEUE = "conveyor.data.transform"
JOB = {"type": "data.transform", "params": {"rows": [{"value": 1}]}}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(f"group-commit-{request.param}")
    with running_stack(
        workdir,
        request.param,
        workers=("cmd",),
        CONVEYOR_MAINTENANCE_INTERVAL_S="0.5",
        CONVEYOR_UNDISPATCHED_AFTER_S="1",
    ) as running:
        yield running


def _concurrently(
    stack: Stack, requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            return await asyncio.gather(
                *(client.request(method, path, **kwargs) for method, path, kwargs in requests)
            )

    return asyncio.run(send_all())


def _rows(stack: Stack, ids: list[str]) -> dict[str, Any]:
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Job.id, Job.dispatched_at).where(Job.id.in_([uuid.UUID(i) for i in ids]))
            ).all()
    finally:
        engine.dispose()
    return {str(row.id): row.dispatched_at for row in rows}


def _queued_messages(stack: Stack) -> int:
    # A passive declare asks the queue itself (rabbitmqctl's count lags by up to 5 s).
    with Connection(stack.env["CONVEYOR_BROKER_URL"]) as connection:
        declared = connection.default_channel.queue_declare(DATA_QUEUE, passive=True)
    return int(declared.message_count)


def test_concurrent_submissions_are_each_committed_published_once_and_marked(stack: Stack):
    before = _queued_messages(stack)
    responses = _concurrently(stack, [("POST", "/v1/jobs", {"json": JOB})] * 64)
    assert [r.status_code for r in responses] == [202] * 64, responses[0].text
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 64
    # A 202 means the row is committed: every one is there as soon as its answer arrived.
    assert set(_rows(stack, ids)) == set(ids)
    # dispatched_at is written in the background; give the repairs several rounds past
    # CONVEYOR_UNDISPATCHED_AFTER_S, in which they must not publish any of these again.
    deadline = time.monotonic() + 10
    while None in _rows(stack, ids).values() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert None not in _rows(stack, ids).values()
    time.sleep(2.5)
    print(f"64 concurrent submissions: {_queued_messages(stack) - before} messages queued")
    assert _queued_messages(stack) - before == 64


def test_concurrent_requests_with_one_idempotency_key_make_one_job(stack: Stack):
    before = _queued_messages(stack)
    headers = {"Idempotency-Key": f"group-{uuid.uuid4()}"}
    responses = _concurrently(stack, [("POST", "/v1/jobs", {"json": JOB, "headers": headers})] * 16)
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    replayed = [r.headers.get("Idempotent-Replayed") == "true" for r in responses]
    assert replayed.count(False) == 1  # one request created it; the others got it back
    time.sleep(0.5)
    assert _queued_messages(stack) - before == 1


def test_concurrent_lookups_each_get_their_own_job_and_unknown_ids_404(stack: Stack):
    created = _concurrently(
        stack,
        [
            ("POST", "/v1/jobs", {"json": {**JOB, "params": {"rows": [{"value": n}]}}})
            for n in range(8)
        ],
    )
    ids = [r.json()["id"] for r in created]
    unknown = [str(uuid.uuid4()) for _ in range(4)]
    lookups = _concurrently(stack, [("GET", f"/v1/jobs/{i}", {}) for i in [*ids, *unknown] * 3])
    for response, job_id in zip(lookups, [*ids, *unknown] * 3, strict=True):
        if job_id in unknown:
            assert response.status_code == 404
        else:
            assert response.status_code == 200
            body = response.json()
            assert body["id"] == job_id
            assert body["params"]["rows"] == [{"value": ids.index(job_id)}]
