"""What a user sees when something is wrong: a message naming the cause, a distinct exit code."""

from __future__ import annotations

import json
import uuid

import typer
from conveyor_client.cli import app
from support.clients import Cli
from support.stack import free_port


def test_connection_refused_names_the_url(cli: Cli):
    url = f"http://127.0.0.1:{free_port()}"
    result = cli.run("list", "--url", url)
    assert result.returncode == 5
    assert f"cannot reach Conveyor at {url}" in result.stderr
    assert "Connection refused" in result.stderr
    assert "CONVEYOR_URL" in result.stderr  # how to point elsewhere

    as_json = cli.run("get", str(uuid.uuid4()), "--output", "json", CONVEYOR_URL=url)
    assert as_json.returncode == 5
    error = json.loads(as_json.stderr)
    assert error["url"] == url and error["exit_code"] == 5
    assert as_json.stdout == ""


def test_an_invalid_param_names_the_field(cli: Cli):
    result = cli.run(
        "submit",
        "ml.train",
        "-p",
        "model=random_forest",
        "-p",
        "hyperparameters.n_estimators=50000",
    )
    assert result.returncode == 2
    assert "params.hyperparameters.n_estimators" in result.stderr
    assert "less than or equal to 5000" in result.stderr

    as_json = cli.run("submit", "cmd.run", "-p", "commandx=echo", "--output", "json")
    assert as_json.returncode == 2
    fields = {f["field"]: f["message"] for f in json.loads(as_json.stderr)["fields"]}
    assert fields == {
        "params.command": "Field required",
        "params.commandx": "Extra inputs are not permitted",
    }


def test_a_command_outside_the_catalog_is_refused(cli: Cli):
    result = cli.run("submit", "cmd.run", "-p", "command=rm", "-p", 'args=["-rf","/"]')
    assert result.returncode == 6
    assert "'rm' is not in the command catalog" in result.stderr
    assert "(403)" in result.stderr


def test_an_unknown_job_is_not_found(cli: Cli):
    job_id = str(uuid.uuid4())
    for command in (["get", job_id], ["cancel", job_id], ["logs", job_id]):
        result = cli.run(*command)
        assert result.returncode == 4, command
        assert f"job {job_id} not found" in result.stderr


def test_another_keys_job_is_not_found(cli: Cli, admin_cli: Cli):
    admins_job = admin_cli.json("submit", "cmd.run", "-p", "command=echo")["id"]
    result = cli.run("get", admins_job)
    assert result.returncode == 4


def test_a_missing_or_wrong_key_is_explained(cli: Cli):
    env = {k: v for k, v in cli.env.items() if k != "CONVEYOR_API_KEY"}
    anonymous = Cli(env, cli.cwd)
    missing = anonymous.run("list")
    assert missing.returncode == 6
    assert "missing API key" in missing.stderr and "CONVEYOR_API_KEY" in missing.stderr
    wrong = anonymous.run("list", "--api-key", "cnv_wrong")
    assert wrong.returncode == 6 and "invalid or revoked API key" in wrong.stderr


def test_usage_errors_are_caught_before_any_request(cli: Cli):
    not_a_pair = cli.run("submit", "cmd.run", "--param", "command")
    assert not_a_pair.returncode == 2 and "is not key=value" in not_a_pair.stderr
    not_an_id = cli.run("get", "not-a-uuid")
    assert not_an_id.returncode == 2 and "UUID" in not_an_id.stderr


def test_every_command_reports_an_unreachable_gateway_the_same_way(cli: Cli):
    # One decorator gives each command its --url, its client and its error report.
    url = f"http://127.0.0.1:{free_port()}"
    job_id = str(uuid.uuid4())
    (cli.cwd / "in.csv").write_text("a\n1\n")
    commands = [
        ["submit", "cmd.run", "-p", "command=echo"],
        ["get", job_id],
        ["list"],
        ["cancel", job_id],
        ["logs", job_id],
        ["artifact", job_id, "model.skops"],
        ["upload", "in.csv"],
        ["types"],
        ["status"],
    ]
    assert {command[0] for command in commands} == set(typer.main.get_command(app).commands)
    for command in commands:
        result = cli.run(*command, "--url", url, "--output", "json")
        assert result.returncode == 5, command
        assert result.stdout == "", command
        error = json.loads(result.stderr)
        assert error["url"] == url and error["exit_code"] == 5, command
        assert f"cannot reach Conveyor at {url}" in error["error"], command
