"""A run that cannot renew its heartbeat lease stops itself, before anyone takes its job over.

The gateway's reaper takes a running job whose heartbeat has been silent for
CONVEYOR_STALE_JOB_AFTER_S (it fails it, or queues it again after a hand-over). A worker
cut off from the job store used to keep running the job meanwhile, so a second copy could
start beside the first. Now the run stops after half that time without a renewal.
"""

from __future__ import annotations

import time
from pathlib import Path

from support.proxy import CuttableProxy
from support.stack import running_stack

STALE_AFTER_S = 12.0  # the worker's lease is half of it


def processes_running(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().rstrip(b"\0").endswith(wanted):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_a_worker_cut_off_from_the_store_stops_its_job_within_its_lease(tmp_path):
    proxy = CuttableProxy("127.0.0.1", 5432)
    stale = {"CONVEYOR_STALE_JOB_AFTER_S": str(STALE_AFTER_S)}
    try:
        with running_stack(tmp_path, "postgres", workers=(), **stale) as stack:
            database = stack.env["CONVEYOR_DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
            stack.start_worker("cmd", CONVEYOR_DATABASE_URL=database)
            stack.wait_ready()
            argv = ["sleep", "97"]
            with stack.client() as client:
                job = stack.submit(client, "cmd.run", {"command": "sleep", "args": ["97"]})
                stack.wait_for(client, job["id"], {"running"}, timeout=30)
                deadline = time.monotonic() + 10
                while not processes_running(argv):
                    assert time.monotonic() < deadline, "the command never started"
                    time.sleep(0.1)
                proxy.cut()
                cut_at = time.monotonic()
                while processes_running(argv):
                    # The gateway may take the job from STALE_AFTER_S after the last beat on.
                    assert time.monotonic() - cut_at < STALE_AFTER_S - 1, "still running"
                    time.sleep(0.2)
                stopped_after = time.monotonic() - cut_at
                assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
                assert "heartbeat lease of 6 s expired" in stack.services["cmd"].log()
                proxy.restore()
                # Then the job is the redelivered message's to take over (a second attempt)
                # or the reaper's to fail, whichever comes first; never two runs at once.
                deadline = time.monotonic() + 60
                while True:
                    assert len(processes_running(argv)) <= 1
                    now = client.get(f"/v1/jobs/{job['id']}").json()
                    if now["state"] == "failed" or now["attempts"] == 2:
                        break
                    assert time.monotonic() < deadline, now
                    time.sleep(0.2)
        if now["state"] == "failed":
            assert "no heartbeat" in now["error"], now
        else:
            assert now["state"] == "running", now
        assert stopped_after >= STALE_AFTER_S / 2 - 1  # it did wait for its lease to run out
    finally:
        proxy.close()
