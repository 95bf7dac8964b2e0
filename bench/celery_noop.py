"""The ceiling for worker overhead: a bare Celery no-op task, default settings, same broker.

`celery -A bench.celery_noop worker -Q bench.noop -c 1` drains BENCH_NOOP_COUNT no-op
messages; the pool process writes "<first start> <last end>" (unix seconds) to
BENCH_NOOP_RESULT when the last one ends.

With BENCH_NOOP_DELIVERY=conveyor the same no-op runs with Conveyor's delivery settings
instead of Celery's defaults: persistent messages on a quorum queue, acknowledged after
the task (acks_late), one unacknowledged message per process (prefetch 1). That is the
ceiling for a worker that may not lose a job, before any job store write.
"""

from __future__ import annotations

import os
import time
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


@app.task(name="bench.noop")
def noop() -> None:
    return None


@signals.task_prerun.connect
def _started(**_: Any) -> None:
    if not _seen["first"]:
        _seen["first"] = time.time()


@signals.task_postrun.connect
def _finished(**_: Any) -> None:
    _seen["count"] += 1
    if _seen["count"] == int(os.environ["BENCH_NOOP_COUNT"]):
        with open(os.environ["BENCH_NOOP_RESULT"], "w") as handle:
            handle.write(f"{_seen['first']} {time.time()}\n")
