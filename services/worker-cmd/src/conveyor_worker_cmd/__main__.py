"""`conveyor-worker-cmd`: consume the cmd job queue and run its jobs."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from conveyor_core.jobs import CMD_RUN
from conveyor_core.settings import get_settings
from conveyor_core.worker import run_worker

from conveyor_worker_cmd.confine import make_non_dumpable
from conveyor_worker_cmd.job import isolation_for, run
from conveyor_worker_cmd.sandbox import SandboxError, identity_for

log = logging.getLogger("conveyor.worker.cmd")


def main() -> None:
    # First: the environment holds the broker and database URLs, and commands may run as
    # this very uid. Pool processes inherit it across fork; the hook below re-asserts it.
    make_non_dumpable()
    signals.worker_init.connect(_log_isolation, weak=False)
    signals.worker_process_init.connect(_harden_pool_process, weak=False)
    run_worker(CMD_RUN, run)


def _harden_pool_process(**_: Any) -> None:
    make_non_dumpable()


def _log_isolation(**_: Any) -> None:
    """Say once, at start, what confinement commands get here and what will be refused."""
    settings = get_settings()
    try:
        isolation = isolation_for(identity_for(settings.cmd_run_as_user))
    except SandboxError as error:
        log.error("cmd.run jobs will fail: %s", error)
        return
    for gap in isolation.gaps():
        log.warning("command isolation: %s", gap)
    if not isolation.complete:
        if settings.cmd_allow_weak_isolation:
            log.warning("CONVEYOR_CMD_ALLOW_WEAK_ISOLATION=true: running commands anyway")
        else:
            log.error(
                "cmd.run jobs will fail: commands cannot be isolated on this host "
                "(CONVEYOR_CMD_ALLOW_WEAK_ISOLATION=true accepts the weaker isolation)"
            )
    else:
        log.info(
            "command isolation: Landlock ABI %d, seccomp, %s",
            isolation.landlock_abi,
            "a user namespace per command" if isolation.user_namespaces else "shared uid",
        )


if __name__ == "__main__":
    main()
