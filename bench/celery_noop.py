"""The ceiling for worker overhead: a bare Celery no-op task, default settings, same broker.

`celery -A bench.celery_noop worker -Q bench.noop -c 1` drains BENCH_NOOP_COUNT no-op
messages; the pool process writes "<first start> <last end>" (unix seconds) to
BENCH_NOOP_RESULT when the last one ends.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, signals

app = Celery("bench-noop", broker=os.environ.get("BROKER_URL", "amqp://guest@127.0.0.1//"))
app.conf.update(task_ignore_result=True, task_default_queue="bench.noop")

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
