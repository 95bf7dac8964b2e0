"""`submit --wait` and `logs --follow`: following a job over its event stream, in a terminal.

The progress bar is read from a pseudo-terminal (pexpect), where rich draws it live, as a
user sees it. These need the gateway's `GET /v1/jobs/{id}/events`.
"""

from __future__ import annotations

import importlib
import json
import re
import time

import pexpect
from conveyor_client import ConveyorClient
from support.clients import CONVEYOR, Cli, KeyedStack

# The module, not the Typer app that conveyor_client.cli exports under the same name.
cli_app = importlib.import_module("conveyor_client.cli.app")
PERCENT = re.compile(rb"(\d{1,3})%")
# Quiet for a while first: `logs --follow` is connected before the first line.
TICKER = (
    "import sys, time\n"
    "time.sleep(5)\n"
    "for i in range(4):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.7)\n"
    "print('warning: done', file=sys.stderr, flush=True)"
)


def terminal(cli: Cli, *args: str, timeout: float = 120) -> pexpect.spawn:
    env = {**cli.env}
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(
        CONVEYOR, list(args), env=env, cwd=str(cli.cwd), timeout=timeout, dimensions=(40, 160)
    )


def test_wait_draws_a_rising_progress_bar_then_prints_the_result(cli: Cli):
    child = terminal(
        cli,
        "submit",
        "ml.train",
        "-p",
        "dataset=synthetic",
        "-p",
        "n_samples=20000",
        "-p",
        "model=random_forest",
        "--wait",
    )
    child.expect(rb"submitted ml.train job ([0-9a-f-]{36})")
    job_id = child.match.group(1).decode()
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before

    assert child.exitstatus == 0, screen.decode(errors="replace")[-2000:]
    bar, _, result = screen.partition(b"state")  # the job's details follow the bar
    shown = [int(p) for p in PERCENT.findall(bar)]
    assert shown == sorted(shown), f"progress went down: {shown}"
    assert any(0 < p < 100 for p in shown), f"no intermediate progress drawn: {shown}"
    assert shown[-1] == 100
    assert b"ml.train running" in bar
    assert b"succeeded" in result and b'"accuracy"' in result
    assert cli.json("get", job_id)["state"] == "succeeded"


def test_wait_exits_3_when_the_job_is_cancelled(cli: Cli):
    child = terminal(cli, "submit", "cmd.run", "-p", "command=sleep", "-p", 'args=["60"]', "--wait")
    child.expect(rb"submitted cmd.run job ([0-9a-f-]{36})")
    job_id = child.match.group(1).decode()
    child.expect(rb"cmd.run running")
    assert cli.run("cancel", job_id).returncode == 0
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert b"cancelled by request" in child.before


def test_wait_with_json_output_prints_only_the_finished_job_and_exits_1_on_failure(
    cli: Cli, tmp_path
):
    # A column the file does not have: found out only when the worker reads the file.
    (tmp_path / "a.csv").write_text("a\n1\n")
    source = cli.json("upload", str(tmp_path / "a.csv"))["path"]
    result = cli.run(
        "submit",
        "data.transform",
        "-p",
        f"source={source}",
        "-p",
        'steps=[{"op": "select", "columns": ["nope"]}]',
        "--wait",
        "--output",
        "json",
    )
    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)  # nothing but the job: no bar in JSON mode
    assert job["state"] == "failed" and "nope" in job["error"]


def test_logs_follow_prints_each_line_as_the_command_writes_it(cli: Cli):
    job_id = cli.json(
        "submit", "cmd.run", "-p", "command=python", "-p", f"args={json.dumps(['-c', TICKER])}"
    )["id"]
    child = terminal(cli, "logs", job_id, "--follow")
    child.expect(rb"running \(attempt 1\)")  # the history so far; the command is still quiet
    arrived = []
    for i in range(4):
        child.expect(f"tick {i}".encode())
        arrived.append(time.monotonic())
    child.expect(b"warning: done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # Lines came as they were printed (0.7 s apart), not all at once at the end.
    assert arrived[-1] - arrived[0] > 1.0

    # Streams stay apart: stdout has the ticks, stderr the warning and the state changes.
    replay = cli.run("logs", job_id, "--follow")
    assert replay.returncode == 0
    assert replay.stdout.splitlines() == [f"tick {i}" for i in range(4)]
    assert "warning: done" in replay.stderr and "succeeded" in replay.stderr


def test_logs_follow_as_json_lines(cli: Cli):
    job_id = cli.json("submit", "cmd.run", "-p", "command=echo", "-p", 'args=["hello"]')["id"]
    result = cli.run("logs", job_id, "--follow", "--output", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "state" and events[-1]["data"]["state"] == "succeeded"
    output = [event["data"] for event in events if event["event"] == "output"]
    assert [(line["stream"], line["line"]) for line in output] == [("stdout", "hello")]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_wait_exits_1_when_the_command_exits_non_zero(cli: Cli):
    result = cli.run(
        "submit", "cmd.run", "-p", "command=date", "-p", 'args=["--date=garbage"]',
        "--wait", "--output", "json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == "failed"
    assert job["error"] == "the command exited with code 1"
    assert job["result"]["exit_code"] == 1  # kept: what the command said
    assert "invalid date" in job["result"]["stderr"]


def test_wait_prints_the_output_of_a_job_that_ended_before_its_stream_opened(
    keyed_stack: KeyedStack,
):
    """A fast command can finish between the 202 and the stream's first byte: `--wait` must
    still print its lines (it replays the job's history, not a snapshot of the end)."""
    with ConveyorClient(keyed_stack.stack.base_url, keyed_stack.user_key) as client:
        accepted = client.submit("cmd.run", {"command": "echo", "args": ["said before the stream"]})
        assert client.wait(accepted.id).state == "succeeded"
        with cli_app.err.capture() as captured:  # the job has ended: now follow it
            cli_app._follow_with_progress(client, accepted.id, "cmd.run")
    assert "said before the stream" in captured.get()
