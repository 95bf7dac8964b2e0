"""Load generation: wrk for the closed-loop HTTP runs, hey for a fixed offered rate, a bounded
httpx loop for the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import procs

# wrk's Lua hooks: the request, and a machine-readable summary at the end.
_LUA = """
wrk.method = {method}
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{extra_headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class HttpRun:
    """One wrk run: completed and successful requests, latency, and who burned the CPU."""

    requests: int
    ok: int
    seconds: float
    ok_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    server_cpu_pct: float  # of one core, the server's processes over the run
    loadgen_cpu_pct: float  # of one core, wrk itself

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_load(argv: list[str], seconds: float, server_pid: int) -> tuple[str, float, float, float]:
    """Run a load generator to its end: its output, the wall time, and the CPU seconds the
    server's processes and the generator itself used meanwhile."""
    outputs, _, wall, server_cpu, loadgen_cpu = _run_loads([argv], 0.0, seconds, server_pid)
    return outputs[0], wall, server_cpu, loadgen_cpu


def _run_loads(
    commands: list[list[str]], gap_s: float, seconds: float, server_pid: int
) -> tuple[list[str], list[float], float, float, float]:
    """Run load generators side by side, each started `gap_s` after the one before, to
    their end: their outputs, their start times (s after the first one's), the wall time,
    and the CPU seconds the server's processes and the generators used meanwhile."""
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = procs.tree_cpu_seconds(server_pid)
    started = time.monotonic()
    with contextlib.ExitStack() as files:
        running: list[tuple[subprocess.Popen[bytes], Any]] = []
        starts = []
        for index, argv in enumerate(commands):
            time.sleep(max(0.0, started + index * gap_s - time.monotonic()))
            # A file, not a pipe: nobody reads the others' pipes while one is waited for.
            output = files.enter_context(tempfile.TemporaryFile())
            starts.append(time.monotonic() - started)
            process = subprocess.Popen(argv, stdout=output)
            files.callback(_stop, process)  # on an error or a timeout; a no-op otherwise
            running.append((process, output))
        outputs = []
        for process, output in running:
            if process.wait(timeout=seconds + 30) != 0:
                raise subprocess.CalledProcessError(process.returncode, process.args)
            output.seek(0)
            outputs.append(output.read().decode())
    wall = time.monotonic() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    loadgen_cpu = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    server_cpu = procs.tree_cpu_seconds(server_pid) - server_before
    return outputs, starts, wall, server_cpu, loadgen_cpu


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (make bench does it)")
    return wrk


def wrk(
    url: str,
    *,
    seconds: float,
    server_pid: int,
    connections: int = 32,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpRun:
    """A closed loop of `connections` keep-alive connections for `seconds`, one wrk thread."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            _LUA.format(
                method=json.dumps(method),
                body=json.dumps(body) if body else "nil",
                extra_headers="\n".join(
                    f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                    for k, v in (headers or {}).items()
                ),
            )
        )
    try:
        argv = [require_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        run = _run_load([*argv, "--timeout", "5s", "-s", script.name, url], seconds, server_pid)
    finally:
        Path(script.name).unlink()
    out, wall, server_cpu, loadgen_cpu = run
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    duration = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status_errors"]
    return HttpRun(
        requests=raw["requests"],
        ok=ok,
        seconds=round(duration, 3),
        ok_per_s=round(ok / duration, 1),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        socket_errors=raw["socket_errors"],
        server_cpu_pct=round(100 * server_cpu / duration, 1),
        loadgen_cpu_pct=round(100 * loadgen_cpu / wall, 1),
    )


def require_hey() -> str:
    hey = shutil.which("hey")
    if hey is None:
        raise SystemExit("hey is missing: `apt-get install -y hey` (make bench does it)")
    return hey


def hey(
    url: str,
    *,
    rate: int,
    seconds: float,
    server_pid: int,
    workers: int = 50,
    spread: bool = True,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpRun:
    """A fixed offered load: `workers` connections each sending `rate / workers` requests a
    second for `seconds` (Debian's hey, `-q`). Unlike wrk's closed loop, a slow answer
    does not slow the load down, as long as it stays under a connection's interval
    (`workers / rate` s, 50 ms at 50 workers and 1,000/s); so its p99 is the latency a
    client sees at that rate, not a consequence of the throughput.

    One hey's connections tick together: `hey -c 50 -q 20` sends its 50 requests at once,
    every 50 ms (97% of them within 0.2 ms of another, measured). `spread` runs one hey
    per connection instead, each started `1 / rate` s after the one before, so requests
    arrive one every `1 / rate` s; without it, in those bursts."""
    per_worker = rate / workers
    argv = [require_hey(), "-z", f"{max(1, round(seconds))}s"]
    argv += ["-q", f"{per_worker:g}", "-t", "5", "-o", "csv", "-m", method]
    argv += ["-T", "application/json"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if body is not None:
        argv += ["-d", body]
    if spread:
        commands, gap_s = [[*argv, "-c", "1", url] for _ in range(workers)], 1 / rate
    else:
        commands, gap_s = [[*argv, "-c", str(workers), url]], 0.0
    outputs, starts, wall, server_cpu, loadgen_cpu = _run_loads(
        commands, gap_s, seconds, server_pid
    )
    # response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
    latencies, ok, duration = [], 0, 0.0
    for out, start in zip(outputs, starts, strict=True):
        for line in out.splitlines()[1:]:
            row = line.split(",")
            if len(row) < 8:
                continue
            latencies.append(1000 * float(row[0]))
            ok += row[6].startswith("2")
            duration = max(duration, start + float(row[7]) + float(row[0]))
    latencies.sort()
    duration = duration or wall

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return HttpRun(
        requests=len(latencies),
        ok=ok,
        seconds=round(duration, 3),
        ok_per_s=round(ok / duration, 1),
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=round(latencies[-1], 2) if latencies else 0.0,
        socket_errors=0,  # hey leaves a failed request out of the csv
        server_cpu_pct=round(100 * server_cpu / duration, 1),
        loadgen_cpu_pct=round(100 * loadgen_cpu / wall, 1),
    )


async def bounded_gather(
    count: int, make: Callable[[int], Awaitable[Any]], *, concurrency: int, limit_s: float
) -> list[Any]:
    """Run make(0..count-1) with at most `concurrency` in flight; give up after `limit_s`."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Any:
        async with gate:
            return await make(index)

    async with asyncio.timeout(limit_s):
        return await asyncio.gather(*(one(i) for i in range(count)))


def submit_many(
    base_url: str,
    count: int,
    request: Callable[[int], tuple[str, str, Any]],
    *,
    concurrency: int = 16,
    timeout: float = 300,
    headers: dict[str, str] | None = None,
) -> list[tuple[str, float]]:
    """POST `count` requests (method, path, json) concurrently; return (task id, unix time)."""

    async def main() -> list[tuple[str, float]]:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=base_url, timeout=30, limits=limits, headers=headers
        ) as client:

            async def make(index: int) -> tuple[str, float]:
                method, path, body = request(index)
                response = await client.request(method, path, json=body)
                response.raise_for_status()
                data = response.json()
                return str(data.get("id") or data["task_id"]), time.time()

            return await bounded_gather(count, make, concurrency=concurrency, limit_s=timeout)

    return asyncio.run(main())
