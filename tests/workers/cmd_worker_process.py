"""Run one cmd.run job in this process, as a pool process of the cmd worker does, and print
how it ended as one JSON line.

tests/workers/test_cmd_isolation.py starts it under setpriv as an unprivileged uid with no
capabilities, the way the image and the chart run the worker (and `make run` runs it as
the caller), with its settings and secrets in the environment.

    python cmd_worker_process.py '{"params": {...}, "extra": {"name": "/usr/bin/x"}}'
"""

from __future__ import annotations

import json
import sys
import uuid

from conveyor_core.artifacts import ArtifactStore
from conveyor_core.jobs.cmd import CommandParams
from conveyor_core.settings import DEFAULT_COMMAND_CATALOG, CatalogCommand, Settings
from conveyor_core.worker.context import JobContext, JobFailed
from conveyor_worker_cmd.job import run


def main(spec: dict[str, object]) -> dict[str, object]:
    extra = spec.get("extra") or {}
    assert isinstance(extra, dict)
    catalog = dict(DEFAULT_COMMAND_CATALOG)
    for name, executable in extra.items():
        catalog[name] = CatalogCommand(executable=executable, max_args=16)  # any argument
    overrides = spec.get("settings") or {}
    assert isinstance(overrides, dict)
    settings = Settings(command_catalog=catalog, **overrides)  # the rest from CONVEYOR_*
    ctx = JobContext(uuid.uuid4(), settings, ArtifactStore(settings.artifact_root))
    try:
        result = run(CommandParams.model_validate(spec["params"]), ctx)
    except JobFailed as failure:
        return {"failed": str(failure)}
    return {"result": result.model_dump()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
