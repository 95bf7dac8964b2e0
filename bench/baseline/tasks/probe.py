"""Bench instrumentation, not part of the pattern: when each task starts and ends.

Loaded with `--include` next to the task modules. Appends `<event> <task id> <unix time>`
lines to $BASELINE_PROBE_LOG from the pool process running the task, so the bench can
measure dispatch latency and drain time without touching the `rpc://` results.
"""

import os
import time

from celery import signals

_log = {"pid": 0, "file": None}


def _write(event, task_id):
    if _log["pid"] != os.getpid():
        _log["file"] = open(os.environ["BASELINE_PROBE_LOG"], "a", buffering=1)  # noqa: SIM115
        _log["pid"] = os.getpid()
    _log["file"].write(f"{event} {task_id} {time.time():.6f}\n")


@signals.task_prerun.connect
def _started(task_id=None, **_):
    _write("start", task_id)


@signals.task_postrun.connect
def _finished(task_id=None, **_):
    _write("end", task_id)
