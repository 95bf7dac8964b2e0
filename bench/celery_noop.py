"""The ceiling for worker overhead: a bare Celery no-op task, default settings, same broker.

`celery -A bench.celery_noop worker -Q bench.noop -c 1` drains BENCH_NOOP_COUNT no-op
messages; the pool process writes "<first start> <last end>" (unix seconds) to
BENCH_NOOP_RESULT when the last one ends.

With BENCH_NOOP_DELIVERY=conveyor the same no-op runs with Conveyor's delivery settings
instead of Celery's defaults: persistent messages on a quorum queue, acknowledged after
the task (acks_late), one unacknowledged message per process (prefetch 1). That is the
ceiling for a worker that may not lose a job, before any job store write.

With BENCH_NOOP_STORE (a job store URL) as well, each task also makes a job's two durable
writes, Conveyor's own claim and finish of the queued row the message names: the
**composed floor**, the least any worker with Conveyor's guarantees does per job.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

app = Celery("bench-noop", broker=os.environ.get("BROKER_URL", "amqp://guest@127.0.0.1//"))
app.conf.update(task_ignore_result=True, task_default_queue="bench.noop")
if os.environ.get("BENCH_NOOP_DELIVERY") == "conveyor":
    app.conf.update(
        task_queues=[Queue("bench.noop", queue_arguments={"x-queue-type": "quorum"})],  # type: ignore[no-untyped-call]
        task_default_delivery_mode="persistent",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_detect_quorum_queues=True,
    )

_seen = {"first": 0.0, "count": 0}
_store: dict[int, Any] = {}  # pid -> WorkerJobStore: a connection must not cross a fork


def _job_store() -> Any:
    from conveyor_core.store.engine import make_sync_engine
    from conveyor_core.store.worker_ops import WorkerJobStore

    if os.getpid() not in _store:
        _store.clear()
        _store[os.getpid()] = WorkerJobStore(make_sync_engine(os.environ["BENCH_NOOP_STORE"]))
    return _store[os.getpid()]


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(job_id: str | None = None) -> None:
    if job_id is None:
        return
    from conveyor_core.states import JobState

    store = _job_store()
    claim = store.claim(uuid.UUID(job_id), f"bench/{os.getpid()}")
    assert claim is not None, f"job {job_id} could not be claimed"
    store.finish(
        uuid.UUID(job_id),
        JobState.SUCCEEDED,
        result={"rows": [{"value": 1}], "row_count": 1},
        artifacts=[],
        progress=1.0,
        attempt=claim.attempts,
    )


@signals.task_prerun.connect  # type: ignore[untyped-decorator]
def _started(**_: Any) -> None:
    if not _seen["first"]:
        _seen["first"] = time.time()


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _finished(**_: Any) -> None:
    _seen["count"] += 1
    if _seen["count"] == int(os.environ["BENCH_NOOP_COUNT"]):
        with open(os.environ["BENCH_NOOP_RESULT"], "w") as handle:
            handle.write(f"{_seen['first']} {time.time()}\n")
