"""GET /v1/jobs/{id}/events: a job followed live, resumed without gaps, and ended, on a real
stack with the PostgreSQL LISTEN/NOTIFY push and with the SQLite poll fallback."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG
from conveyor_core.states import JobState
from conveyor_core.store import Job, JobEvent, utcnow
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.event_log import NewEvent, progress_event, record_events, state_event
from httpx_sse import connect_sse
from sqlalchemy import func, select, update
from support.clients import api_keys
from support.rows import insert_job
from support.stack import Stack, running_stack

PYTHON = "/usr/bin/python3"
MAX_STREAMS = 6
MAX_OUTPUT_LINES = 40
POLL_INTERVAL_S = 0.2  # SQLite's: its events reach a stream up to this late
FINAL = {"succeeded", "failed", "cancelled"}
# A few seconds of random forest, reporting progress as the trees grow.
TRAINING = {
    "dataset": "synthetic",
    "n_samples": 3000,
    "n_features": 20,
    "model": "random_forest",
    "hyperparameters": {"n_estimators": 400},
}
BLOCKER = {**TRAINING, "hyperparameters": {"n_estimators": 60}}
# Prints a line every 0.4 s, one to stderr, and ends with a line without a line break.
TICKER = (
    "import sys, time\n"
    "for i in range(5):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.4)\n"
    "print('to stderr', file=sys.stderr, flush=True)\n"
    "sys.stdout.write('no newline at the end')\n"
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    catalog = {name: command.model_dump() for name, command in DEFAULT_COMMAND_CATALOG.items()}
    catalog["python"] = {"executable": PYTHON, "max_args": 4}
    with running_stack(
        tmp_path_factory.mktemp(f"events-{request.param}"),
        request.param,
        workers=("ml", "cmd"),
        # One job at a time per worker: a second job waits queued, deterministically.
        CONVEYOR_WORKER_CONCURRENCY="1",
        CONVEYOR_AUTH_ENABLED="true",
        CONVEYOR_COMMAND_CATALOG=json.dumps(catalog),
        CONVEYOR_EVENTS_KEEPALIVE_S="1",
        CONVEYOR_EVENTS_POLL_INTERVAL_S=str(POLL_INTERVAL_S),
        CONVEYOR_EVENTS_MAX_STREAMS=str(MAX_STREAMS),
        CONVEYOR_EVENTS_MAX_OUTPUT_LINES=str(MAX_OUTPUT_LINES),
        CONVEYOR_EVENTS_RETENTION_S="3600",
        CONVEYOR_MAINTENANCE_INTERVAL_S="0.5",
        CONVEYOR_STALE_JOB_AFTER_S="5",
    ) as running:
        yield running


@dataclass(frozen=True)
class Keys:
    alice: str
    bob: str
    admin: str


@pytest.fixture(scope="module")
def keys(stack: Stack) -> Keys:
    return Keys(
        alice=api_keys(stack, "create", "alice"),
        bob=api_keys(stack, "create", "bob"),
        admin=api_keys(stack, "create", "root", "--admin"),
    )


def as_key(stack: Stack, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {secret}"}
    )


@pytest.fixture
def alice(stack: Stack, keys: Keys) -> Iterator[httpx.Client]:
    with as_key(stack, keys.alice) as client:
        yield client


@pytest.fixture
def admin(stack: Stack, keys: Keys) -> Iterator[httpx.Client]:
    with as_key(stack, keys.admin) as client:
        yield client


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    received: float  # time.monotonic() on arrival


def follow(
    client: httpx.Client,
    job_id: str,
    last_event_id: int | None = None,
    stop_after: int | None = None,
) -> list[Event]:
    """The events of one connection, until the server closes it (or `stop_after` events)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    events: list[Event] = []
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events", headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if not sse.data:  # httpx-sse reports a keep-alive comment as an empty message
                continue
            events.append(Event(int(sse.id), sse.event, json.loads(sse.data), time.monotonic()))
            if stop_after is not None and len(events) == stop_after:
                break
    return events


def at(event: Event) -> datetime:
    """When the server recorded the event."""
    return datetime.fromisoformat(event.data["at"])


def assert_numbered_from(events: list[Event], first: int) -> None:
    assert [e.id for e in events] == list(range(first, first + len(events))), [
        (e.id, e.kind) for e in events
    ]


def test_a_training_is_followed_from_queued_to_succeeded(stack: Stack, alice: httpx.Client):
    # The one ML pool process is busy with the blocker, so the training is seen queued.
    blocker = stack.submit(alice, "ml.train", BLOCKER)["id"]
    job_id = stack.submit(alice, "ml.train", TRAINING)["id"]
    events = follow(alice, job_id)

    snapshot, *changes = events
    assert snapshot.kind == "snapshot"
    assert snapshot.data["id"] == job_id and snapshot.data["state"] == "queued"
    assert snapshot.data["params"]["model"] == "random_forest"
    assert_numbered_from(changes, snapshot.id + 1)
    running, *progress, succeeded = changes
    assert running.kind == "state" and running.data["state"] == "running"
    assert running.data["attempts"] == 1 and running.data["error"] is None
    assert {e.kind for e in progress} == {"progress"}
    values = [e.data["progress"] for e in progress]
    assert len(values) >= 3, values
    assert values == sorted(values) and len(set(values)) == len(values), values
    assert values[0] > 0 and values[-1] <= 1
    assert succeeded.kind == "state" and succeeded.data["state"] == "succeeded"
    assert succeeded.data["result"]["n_train"] == 2250
    assert succeeded.data["result"]["accuracy"] > 0.5
    # Live, not replayed at the end: the events arrived about as far apart as the worker
    # wrote them (give or take one SQLite poll), not together.
    written_apart = (at(succeeded) - at(progress[0])).total_seconds()
    assert written_apart > 3 * POLL_INTERVAL_S, written_apart
    received_apart = succeeded.received - progress[0].received
    assert received_apart > written_apart - POLL_INTERVAL_S - 0.1, (received_apart, written_apart)
    job = alice.get(f"/v1/jobs/{job_id}").json()
    assert succeeded.data["result"] == job["result"] and job["state"] == "succeeded"
    assert alice.get(f"/v1/jobs/{blocker}").json()["state"] == "succeeded"

    # A finished job: its snapshot, then the server closes the stream.
    (again,) = follow(alice, job_id)
    assert again.kind == "snapshot" and again.data["state"] == "succeeded"
    assert again.id == succeeded.id
    # Reconnecting after the final event: 204, which tells an EventSource to stop retrying.
    after_the_end = {"Last-Event-ID": str(succeeded.id)}
    assert alice.get(f"/v1/jobs/{job_id}/events", headers=after_the_end).status_code == 204


def test_a_stream_resumed_with_last_event_id_has_no_gap_and_no_duplicate(
    stack: Stack, alice: httpx.Client
):
    job_id = stack.submit(alice, "ml.train", TRAINING)["id"]
    first = follow(alice, job_id, stop_after=4)  # snapshot, running, two progress events
    assert first[-1].kind == "progress"
    time.sleep(1.0)  # events go on while the client is away
    rest = follow(alice, job_id, last_event_id=first[-1].id)
    assert rest[0].kind != "snapshot"
    assert rest[-1].kind == "state" and rest[-1].data["state"] == "succeeded"

    resumed = first[1:] + rest
    assert_numbered_from(resumed, first[0].id + 1)
    # The whole history, replayed from 0, is exactly what the two connections saw.
    replay = follow(alice, job_id, last_event_id=0)
    assert [(e.id, e.kind, e.data) for e in replay if e.id > first[0].id] == [
        (e.id, e.kind, e.data) for e in resumed
    ]
    assert replay[0].id == 1 and replay[0].data["state"] == "running"


def test_command_output_lines_arrive_while_the_command_runs(stack: Stack, alice: httpx.Client):
    job_id = stack.submit(
        alice, "cmd.run", {"command": "python", "args": ["-c", TICKER], "timeout_s": 60}
    )["id"]
    events = follow(alice, job_id)
    assert events[-1].data["state"] == "succeeded"
    output = [e for e in events if e.kind == "output"]
    assert [(e.data["stream"], e.data["line"]) for e in output] == [
        *[("stdout", f"tick {i}") for i in range(5)],
        ("stderr", "to stderr"),
        ("stdout", "no newline at the end"),
    ]
    # Each line came as it was printed, 0.4 s apart, well before the command ended.
    assert events[-1].received - output[0].received > 1.2
    assert output[4].received - output[0].received > 1.0
    result = events[-1].data["result"]
    assert result["stdout"] == "".join(f"tick {i}\n" for i in range(5)) + "no newline at the end"


def test_a_chatty_command_is_capped_at_the_output_line_limit(stack: Stack, alice: httpx.Client):
    job_id = stack.submit(
        alice,
        "cmd.run",
        {"command": "python", "args": ["-c", "for i in range(500): print(i)"]},
    )["id"]
    events = follow(alice, job_id)
    lines = [e.data["line"] for e in events if e.kind == "output"]
    assert lines == [str(i) for i in range(MAX_OUTPUT_LINES)]
    assert events[-1].data["result"]["stdout"].splitlines() == [str(i) for i in range(500)]


def test_another_keys_job_is_404_and_an_admin_may_follow_it(
    stack: Stack, keys: Keys, alice: httpx.Client, admin: httpx.Client
):
    job_id = stack.submit(alice, "cmd.run", {"command": "echo", "args": ["mine"]})["id"]
    with as_key(stack, keys.bob) as bob:
        assert bob.get(f"/v1/jobs/{job_id}/events").status_code == 404
        assert bob.get(f"/v1/jobs/{uuid.uuid4()}/events").status_code == 404
    with stack.client() as anonymous:
        assert anonymous.get(f"/v1/jobs/{job_id}/events").status_code == 401
    malformed = alice.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "soon"})
    assert malformed.status_code == 422 and "Last-Event-ID" in malformed.text
    assert follow(admin, job_id)[-1].data["state"] == "succeeded"


def test_cancelling_a_queued_job_ends_its_stream(stack: Stack, keys: Keys, alice: httpx.Client):
    blocker = stack.submit(alice, "cmd.run", {"command": "sleep", "args": ["3"]})["id"]
    stack.wait_for(alice, blocker, {"running"}, timeout=30)
    job_id = stack.submit(alice, "cmd.run", {"command": "echo", "args": ["never"]})["id"]
    with as_key(stack, keys.alice) as canceller:
        cancel = threading.Timer(1.0, lambda: canceller.post(f"/v1/jobs/{job_id}/cancel"))
        cancel.start()
        try:
            snapshot, cancelled = follow(alice, job_id)
        finally:
            cancel.join()
    assert snapshot.data["state"] == "queued"
    assert cancelled.kind == "state" and cancelled.id == snapshot.id + 1
    assert cancelled.data == {
        "state": "cancelled",
        "attempts": 0,
        "error": "cancelled by request",
        "at": cancelled.data["at"],
    }
    assert cancelled.received - snapshot.received > 0.5  # it waited, live, for the cancel


def test_a_job_failed_by_the_gateway_for_a_lost_heartbeat_ends_its_stream(
    stack: Stack, admin: httpx.Client
):
    # A running job whose worker vanished: maintenance fails it after CONVEYOR_STALE_JOB_AFTER_S.
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    job_id = insert_job(
        engine, state=JobState.RUNNING, attempts=1, heartbeat_at=utcnow() - timedelta(seconds=4)
    )
    snapshot, failed = follow(admin, str(job_id))
    assert snapshot.data["state"] == "running"
    assert failed.data["state"] == "failed" and "no heartbeat" in failed.data["error"]
    engine.dispose()


def test_a_lost_handed_over_job_is_seen_queued_again_then_run_again(
    stack: Stack, admin: httpx.Client
):
    # Its worker acked the message (hand-over) and vanished: maintenance queues it again.
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    lost = utcnow() - timedelta(seconds=4)
    job_id = insert_job(
        engine, state=JobState.RUNNING, attempts=1, heartbeat_at=lost, handed_over_at=lost
    )
    snapshot, *changes = follow(admin, str(job_id))
    assert snapshot.data["state"] == "running"
    assert_numbered_from(changes, snapshot.id + 1)
    states = [(e.data["state"], e.data["attempts"]) for e in changes if e.kind == "state"]
    assert states == [("queued", 1), ("running", 2), ("succeeded", 2)]
    assert [e.data["line"] for e in changes if e.kind == "output"] == ["from a row"]
    engine.dispose()


def test_a_job_finished_without_an_event_still_ends_the_stream(stack: Stack, admin: httpx.Client):
    # What a worker of the release before events leaves: the row final, no event written.
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    job_id = insert_job(engine, state=JobState.RUNNING, attempts=1, heartbeat_at=utcnow())

    def finish_like_an_old_worker() -> None:
        with engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(state=JobState.SUCCEEDED, result={"exit_code": 0}, finished_at=utcnow())
            )

    finisher = threading.Timer(0.5, finish_like_an_old_worker)
    finisher.start()
    started = time.monotonic()
    snapshot, final = follow(admin, str(job_id))
    finisher.join()
    assert snapshot.data["state"] == "running"
    assert final.kind == "state" and final.id == snapshot.id + 1
    assert final.data["state"] == "succeeded" and final.data["result"] == {"exit_code": 0}
    assert time.monotonic() - started < 5  # within a CONVEYOR_EVENTS_KEEPALIVE_S or so
    # Resuming after that derived event: nothing more will come.
    resumed = admin.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(final.id)})
    assert resumed.status_code == 204
    engine.dispose()


def test_events_of_jobs_finished_long_ago_are_deleted(stack: Stack, admin: httpx.Client):
    engine = make_sync_engine(stack.env["CONVEYOR_DATABASE_URL"])
    long_ago = utcnow() - timedelta(hours=2)
    old, recent = (
        insert_job(engine, state=JobState.SUCCEEDED, finished_at=finished, event_seq=3)
        for finished in (long_ago, utcnow())
    )
    for job_id in (old, recent):
        events = [
            state_event(JobState.RUNNING, 1),
            progress_event(0.5),
            state_event(JobState.SUCCEEDED, 1),
        ]
        with engine.begin() as connection:
            record_events(
                connection, job_id, 3, [NewEvent(e.kind, e.data, long_ago) for e in events]
            )

    def events_of(job_id: uuid.UUID) -> int:
        with engine.connect() as connection:
            count: int = connection.scalar(
                select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)
            )
        return count

    deadline = time.monotonic() + 10
    while events_of(old) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events_of(old) == 0 and events_of(recent) == 3
    # Resuming a pruned history: a snapshot of the finished job stands in for it.
    (snapshot,) = follow(admin, str(old), last_event_id=1)
    assert snapshot.kind == "snapshot" and snapshot.id == 3
    assert snapshot.data["state"] == "succeeded"
    assert [e.id for e in follow(admin, str(recent), last_event_id=1)] == [2, 3]
    engine.dispose()


def test_idle_streams_get_keep_alive_comments(stack: Stack, alice: httpx.Client):
    job_id = stack.submit(alice, "cmd.run", {"command": "sleep", "args": ["3"]})["id"]
    with alice.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines.count(": keep-alive") >= 2, lines
    assert lines[0].startswith("id: ") and lines[1] == "event: snapshot"
    assert lines[-3].startswith("id: ") and lines[-2] == "event: state"
    assert json.loads(lines[-1].removeprefix("data: "))["state"] == "succeeded"


def _open_streams(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("conveyor_event_streams_open "):
            return float(line.split()[1])
    raise AssertionError("conveyor_event_streams_open is not exported")


def _wait_for_open_streams(client: httpx.Client, expected: float) -> None:
    deadline = time.monotonic() + 10
    while _open_streams(client) != expected:
        assert time.monotonic() < deadline, f"{_open_streams(client)} streams open"
        time.sleep(0.1)


def test_streams_per_gateway_are_capped_and_counted(stack: Stack, alice: httpx.Client):
    _wait_for_open_streams(alice, 0)
    job_id = stack.submit(alice, "cmd.run", {"command": "sleep", "args": ["20"], "timeout_s": 60})[
        "id"
    ]
    clients = [httpx.Client(base_url=stack.base_url, headers=alice.headers) for _ in range(6)]
    streams = [c.stream("GET", f"/v1/jobs/{job_id}/events") for c in clients]
    try:
        opened = [stream.__enter__() for stream in streams[:MAX_STREAMS]]
        assert {response.status_code for response in opened} == {200}
        _wait_for_open_streams(alice, MAX_STREAMS)
        refused = alice.get(f"/v1/jobs/{job_id}/events")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        streams[0].__exit__(None, None, None)  # a client goes away: its slot is free again
        _wait_for_open_streams(alice, MAX_STREAMS - 1)
        with alice.stream("GET", f"/v1/jobs/{job_id}/events") as again:
            assert again.status_code == 200
    finally:
        for stream in streams[1:MAX_STREAMS]:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
        alice.post(f"/v1/jobs/{job_id}/cancel")
    _wait_for_open_streams(alice, 0)


def test_streams_of_one_gateway_share_one_wake_up_source(stack: Stack, alice: httpx.Client):
    """Three streams of one job all end; on PostgreSQL, woken through ONE LISTEN connection
    (on SQLite, by the gateway's one poll loop)."""
    on_postgres = "postgresql" in stack.env["CONVEYOR_DATABASE_URL"]
    _wait_for_open_streams(alice, 0)
    job_id = stack.submit(alice, "cmd.run", {"command": "sleep", "args": ["2"]})["id"]
    with ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(follow, alice, job_id) for _ in range(3)]
        _wait_for_open_streams(alice, 3)
        if on_postgres:
            assert _listen_connections(stack) == 1
        endings = [stream.result(timeout=30)[-1].data["state"] for stream in streams]
    assert endings == ["succeeded"] * 3


def _listen_connections(stack: Stack) -> int:
    database = stack.env["CONVEYOR_DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") as admin_db:
        row = admin_db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%'",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_stopping_gateway_ends_streams_cleanly_and_the_next_one_resumes_them(
    stack: Stack, alice: httpx.Client
):
    job_id = stack.submit(alice, "ml.train", TRAINING)["id"]
    seen: list[Event] = []

    def read_until_closed() -> None:  # raises if the stream is cut instead of ended
        with connect_sse(alice, "GET", f"/v1/jobs/{job_id}/events") as source:
            for sse in source.iter_sse():
                if sse.data:
                    seen.append(Event(int(sse.id), sse.event, json.loads(sse.data), 0.0))

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_until_closed)
        deadline = time.monotonic() + 30
        while len(seen) < 3:
            assert time.monotonic() < deadline and not reading.done(), seen
            time.sleep(0.05)
        gateway = stack.retire("api").process
        stopping = time.monotonic()
        gateway.terminate()
        reading.result(timeout=10)
        gateway.wait(timeout=10)
    assert time.monotonic() - stopping < 5  # not uvicorn's 20 s graceful-shutdown timeout
    assert seen[-1].kind != "state" or seen[-1].data["state"] == "running"

    stack.start_api()
    stack.wait_ready()
    rest = follow(alice, job_id, last_event_id=seen[-1].id)
    assert_numbered_from(seen[1:] + rest, seen[0].id + 1)
    assert rest[-1].data["state"] == "succeeded"
