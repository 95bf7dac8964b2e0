"""Profile the gateway's submit hot path with py-spy while wrk loads it.

    uv run --with py-spy==0.4.3 python -m bench.profile [--database postgres] [--seconds 10]

Starts Conveyor's gateway alone (SQLite or a fresh PostgreSQL database, own vhost),
POSTs the bench's small job at 32 connections, samples the gateway with py-spy, and
prints the functions holding the most samples (inclusive, then own). The collapsed
stacks are kept in bench/results/profile-<db>.txt (a flame graph's input).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from bench import load, procs
from bench.procs import REPO
from bench.systems import Conveyor


def summarise(collapsed: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("own", own)):
        out.append(f"\n-- top {top} by {title} share")
        out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy missing: uv run --with py-spy==0.4.3 python -m bench.profile")
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
    out = REPO / "bench" / "results" / f"profile-{args.database}.txt"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        broker_url = cleanup.enter_context(procs.rabbitmq_vhost("conveyor-bench-profile"))
        database_url = (
            cleanup.enter_context(procs.postgres_database())
            if args.database == "postgres"
            else f"sqlite:///{workdir / 'conveyor.db'}"
        )
        system = Conveyor(broker_url, workdir, database_url, f"profile-{args.database}")
        cleanup.callback(system.stop)
        system.start_gateway()
        url = system.base_url + system.submit_path
        load.wrk(
            url,
            seconds=1,
            server_pid=system.gateway_pid,
            method="POST",
            body=system.submit_body,
            headers=system.headers,
        )
        result: dict[str, load.HttpRun] = {}

        def run_load() -> None:
            result["run"] = load.wrk(
                url,
                seconds=args.seconds + 2,
                server_pid=system.gateway_pid,
                method="POST",
                body=system.submit_body,
                headers=system.headers,
            )

        loader = threading.Thread(target=run_load)
        loader.start()
        subprocess.run(
            [
                py_spy,
                "record",
                "--pid",
                str(system.gateway_pid),
                "--duration",
                str(args.seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
            timeout=args.seconds + 60,
        )
        loader.join(timeout=args.seconds + 60)
        system.purge()
    print(f"load during profile: {result.get('run')}")
    print(summarise(out))
    print(f"\ncollapsed stacks: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
