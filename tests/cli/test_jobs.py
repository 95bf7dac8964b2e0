"""`conveyor submit/get/list/cancel/logs/artifact/upload/types`, as a user types them."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from conveyor_core.jobs import JOB_TYPES
from support.clients import Cli, KeyedStack


def wait_for_state(cli: Cli, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = cli.json("get", job_id)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.3)


def test_submit_then_get_and_list_an_ml_job(cli: Cli):
    accepted = cli.json(
        "submit",
        "ml.train",
        "--param",
        "dataset=iris",
        "--param",
        "model=random_forest",
        "--param",
        "hyperparameters.n_estimators=20",
    )
    assert accepted["state"] == "queued"
    job = wait_for_state(cli, accepted["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]
    # `n_estimators=20` went over as the integer 20, nested under hyperparameters.
    assert job["params"]["hyperparameters"]["n_estimators"] == 20
    assert job["result"]["accuracy"] > 0.8
    assert job["artifacts"] == ["model.skops"]

    listed = cli.json("list", "--type", "ml.train", "--state", "succeeded", "--limit", "5")
    assert accepted["id"] in [item["id"] for item in listed["items"]]
    assert all(item["type"] == "ml.train" for item in listed["items"])

    # Into a pipe (no COLUMNS): every column whole, one row per line, as grep and awk want.
    table = cli.run("list", "--type", "ml.train")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if accepted["id"] in line)
    assert row.split()[:4] == [accepted["id"], "ml.train", "succeeded", "100%"]

    shown = cli.run("get", accepted["id"])
    assert shown.returncode == 0
    assert "succeeded" in shown.stdout and '"accuracy"' in shown.stdout


def test_param_values_are_json_when_they_parse_and_text_otherwise(cli: Cli, tmp_path):
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"command": "echo", "args": ["from", "file"]}))
    accepted = cli.json(
        "submit",
        "cmd.run",
        "--params-file",
        str(params_file),
        "--param",
        'args=["-n","3"]',
        "--param",
        "timeout_s=5",
        "--param",
        "stdin=42x",
    )
    job = wait_for_state(cli, accepted["id"], {"succeeded", "failed"})
    assert job["params"]["args"] == ["-n", "3"]  # --param overrides the file
    assert job["params"]["timeout_s"] == 5
    assert job["params"]["stdin"] == "42x"  # not JSON: kept as text
    assert job["result"]["stdout"] == "3"  # echo -n 3

    logs = cli.run("logs", accepted["id"])
    assert logs.returncode == 0
    assert logs.stdout == "3"


def test_list_pages_with_the_cursor_it_prints(cli: Cli):
    for word in ("one", "two", "three"):
        cli.json("submit", "cmd.run", "-p", "command=echo", "-p", f'args=["{word}"]')
    first = cli.json("list", "--type", "cmd.run", "--limit", "2")
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = cli.json("list", "--type", "cmd.run", "--limit", "2", "--cursor", first["next_cursor"])
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    table = cli.run("list", "--type", "cmd.run", "--limit", "2")
    assert f"conveyor list --cursor {first['next_cursor']}" in table.stderr


def test_cancel_a_running_job_and_refuse_a_second_cancel(cli: Cli):
    accepted = cli.json("submit", "cmd.run", "-p", "command=sleep", "-p", 'args=["60"]')
    wait_for_state(cli, accepted["id"], {"running"})
    requested = cli.run("cancel", accepted["id"])
    assert requested.returncode == 0, requested.stderr
    assert "cancel requested" in requested.stdout
    job = wait_for_state(cli, accepted["id"], {"cancelled", "failed", "succeeded"})
    assert job["state"] == "cancelled"

    again = cli.run("cancel", accepted["id"])
    assert again.returncode == 6
    assert "already finished (cancelled)" in again.stderr


def test_cancel_a_queued_job_at_once(cli: Cli, keyed_stack: KeyedStack):
    # One cmd worker runs four jobs at a time: a fifth sleeper waits in the queue.
    sleepers = [
        cli.json("submit", "cmd.run", "-p", "command=sleep", "-p", 'args=["30"]')["id"]
        for _ in range(5)
    ]
    try:
        queued = next(
            job_id for job_id in reversed(sleepers) if cli.json("get", job_id)["state"] == "queued"
        )
        cancelled = cli.json("cancel", queued)
        assert cancelled["state"] == "cancelled"
    finally:
        for job_id in sleepers:
            cli.run("cancel", job_id)


def test_download_an_artifact_to_a_file_and_to_stdout(cli: Cli, keyed_stack: KeyedStack, tmp_path):
    accepted = cli.json("submit", "ml.train", "-p", "model=logistic_regression")
    wait_for_state(cli, accepted["id"], {"succeeded"})
    with httpx.Client(
        base_url=keyed_stack.stack.base_url,
        headers={"Authorization": f"Bearer {keyed_stack.user_key}"},
    ) as http:
        expected = http.get(f"/v1/jobs/{accepted['id']}/artifacts/model.skops").content

    saved = cli.json("artifact", accepted["id"], "model.skops", "-o", str(tmp_path / "m.skops"))
    assert saved["bytes"] == len(expected)
    assert (tmp_path / "m.skops").read_bytes() == expected

    default_name = cli.run("artifact", accepted["id"], "model.skops")  # into the cwd
    assert default_name.returncode == 0
    assert (cli.cwd / "model.skops").read_bytes() == expected

    piped = cli.run_binary("artifact", accepted["id"], "model.skops", "-o", "-")
    assert piped.returncode == 0
    assert piped.stdout == expected

    missing = cli.run("artifact", accepted["id"], "nope.bin", "-o", str(tmp_path / "nope.bin"))
    assert missing.returncode == 4
    assert "has no artifact 'nope.bin'" in missing.stderr
    assert not (tmp_path / "nope.bin").exists()
    assert not list(tmp_path.glob(".nope.bin*")), "a partial file was left behind"


def test_upload_a_csv_and_transform_it(cli: Cli, tmp_path):
    csv = "city,value\nOslo,10\nOslo,20\nLima,5\n"
    (tmp_path / "sales.csv").write_text(csv)
    stored = cli.json("upload", str(tmp_path / "sales.csv"))
    assert stored["path"].endswith("/sales.csv") and stored["size"] == len(csv)
    steps = [
        {
            "op": "aggregate",
            "group_by": ["city"],
            "aggregations": [{"column": "value", "func": "sum"}],
        },
        {"op": "sort", "by": ["city"]},
    ]
    accepted = cli.json(
        "submit",
        "data.transform",
        "-p",
        f"source={stored['path']}",
        "-p",
        f"steps={json.dumps(steps)}",
    )
    job = wait_for_state(cli, accepted["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["rows"] == [
        {"city": "Lima", "value_sum": 5},
        {"city": "Oslo", "value_sum": 30},
    ]


def test_types_lists_every_job_type_with_its_params_schema(cli: Cli):
    types = cli.json("types")
    assert [t["name"] for t in types] == list(JOB_TYPES)
    for info in types:
        assert info["params_schema"] == JOB_TYPES[info["name"]].params_adapter.json_schema()

    table = cli.run("types")
    assert table.returncode == 0
    for name in JOB_TYPES:
        assert name in table.stdout
    assert "command*" in table.stdout  # required params are starred

    detail = cli.run("types", "cmd.run")
    assert detail.returncode == 0
    row = next(line for line in detail.stdout.splitlines() if line.strip().startswith("args"))
    assert "list[str]" in row
    assert "timeout_s" in detail.stdout and "1..86400" in detail.stdout
    # The catalog, so a user finds the allowed commands before a 403 tells them.
    assert "commands this gateway allows" in detail.stdout
    sleep = next(line for line in detail.stdout.splitlines() if line.strip().startswith("sleep"))
    assert sleep.split()[1] == "1" and "[0-9]{1,9}" in sleep
    catalog = next(t for t in types if t["name"] == "cmd.run")["policy"]["commands"]
    assert catalog["sha256sum"]["max_args"] == 0 and "python" in catalog  # this stack's own

    unknown = cli.run("types", "nope.nope")
    assert unknown.returncode == 4 and "ml.train" in unknown.stderr
