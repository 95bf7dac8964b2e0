"""Job rows written straight into the store: the states a crash or a race leaves behind."""

from __future__ import annotations

import uuid
from typing import Any

from conveyor_core.states import JobState
from conveyor_core.store import Job, utcnow
from sqlalchemy import Engine, insert


def insert_job(engine: Engine, **overrides: Any) -> uuid.UUID:
    """Insert a `cmd.run` job (queued, dispatched, never started) with `overrides` applied."""
    now = utcnow()
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "type": "cmd.run",
        "state": JobState.QUEUED,
        "params": {"command": "echo", "args": ["from a row"], "timeout_s": 60, "stdin": None},
        "progress": 0.0,
        "attempts": 0,
        "cancel_requested": False,
        "artifacts": [],
        "owner": "",
        "origin": "v1",
        "created_at": now,
        "updated_at": now,
        "dispatched_at": now,
    }
    row.update(overrides)
    with engine.begin() as connection:
        connection.execute(insert(Job).values(**row))
    job_id: uuid.UUID = row["id"]
    return job_id
