"""`conveyor status [--cluster]`: gateway readiness, each queue and, with a cluster, workers."""

from __future__ import annotations

import json

from conveyor_core.jobs import JOB_TYPES
from support.clients import Cli
from support.stack import free_port


def test_status_shows_the_gateway_ready(cli: Cli):
    result = cli.run("status")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "ok" in lines["gateway"] and cli.env["CONVEYOR_URL"] in lines["gateway"]
    assert "ok" in lines["broker"] and "ok" in lines["job_store"]


def test_cluster_status_shows_each_queue_and_says_why_no_workers_are_shown(admin_cli: Cli):
    status = admin_cli.json("status", "--cluster")
    assert status["gateway"] == {"status": "ok", "checks": {"broker": "ok", "job_store": "ok"}}
    queues = {queue["job_type"]: queue for queue in status["queues"]}
    assert set(queues) == set(JOB_TYPES)
    for name, queue in queues.items():
        assert queue["queue"] == JOB_TYPES[name].queue
        assert queue["consumers"] == 1  # each worker service consumes its own queue only
        assert queue["dead_letter_messages"] == 0
    assert status["cluster"] is None
    assert "no kubeconfig" in status["cluster_note"]

    table = admin_cli.run("status", "--cluster")
    assert table.returncode == 0
    assert "WAITING" in table.stdout and "conveyor.data.transform" in table.stdout
    assert "worker replicas and autoscalers not shown" in table.stderr


def test_cluster_status_with_an_unreachable_api_server_still_shows_the_queues(
    admin_cli: Cli, tmp_path
):
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{free_port()}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "jobs"}}
                ],
                "current-context": "ctx",
            }
        )
    )
    result = admin_cli.run("status", "--cluster", "--output", "json", KUBECONFIG=str(kubeconfig))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {queue["job_type"] for queue in status["queues"]} == set(JOB_TYPES)
    assert status["cluster"] is None
    assert "cannot reach the API server" in status["cluster_note"]


def test_queue_status_needs_an_admin_key(cli: Cli):
    result = cli.run("status", "--cluster")
    assert result.returncode == 6
    assert "queue status needs an admin key (403)" in result.stderr
