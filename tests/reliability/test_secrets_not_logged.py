"""No log line of a full run carries a configured password or an API key."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from support.stack import VENV_BIN, Stack, base_env, postgres_database, rabbitmq_vhost, rabbitmqctl


def test_passwords_and_api_keys_never_reach_the_logs(tmp_path: Path):
    broker_password = "brk-" + secrets.token_hex(12)
    db_password = "db-" + secrets.token_hex(12)
    user = f"conveyor-{secrets.token_hex(4)}"
    with rabbitmq_vhost() as vhost, postgres_database() as database_url:
        rabbitmqctl("add_user", user, broker_password)
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        try:
            env = base_env(
                tmp_path, vhost, database_url.replace("postgres@", f"postgres:{db_password}@")
            )  # trust auth ignores it; logs must too
            env["CONVEYOR_BROKER_URL"] = f"amqp://{user}:{broker_password}@127.0.0.1:5672/{vhost}"
            env["CONVEYOR_AUTH_ENABLED"] = "true"
            env["CONVEYOR_LOG_LEVEL"] = "DEBUG"
            stack = Stack(workdir=tmp_path, env=env, vhost=vhost)
            try:
                stack.start_api()
                stack.wait_ready()
                api_key = subprocess.run(
                    [str(VENV_BIN / "conveyor-api"), "keys", "create", "logger"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                ).stdout.strip()
                for kind in ("cmd", "data"):
                    stack.start_worker(kind)
                stack.wait_ready()
                with stack.client() as client:
                    client.headers["Authorization"] = f"Bearer {api_key}"
                    ids = [
                        stack.submit(client, "cmd.run", {"command": "echo", "args": ["x"]})["id"],
                        stack.submit(client, "data.transform", {"rows": [{"a": 1}]})["id"],
                    ]
                    for job_id in ids:
                        stack.wait_for(client, job_id, {"succeeded"}, timeout=60)
                    client.headers["Authorization"] = "Bearer cnv_wrong-" + api_key[-8:]
                    assert client.get("/v1/jobs").status_code == 401
            finally:
                stack.stop()
        finally:
            rabbitmqctl("delete_user", user)
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    assert set(logs) >= {"api.log", "cmd.log", "data.log"}
    assert sum(len(text) for text in logs.values()) > 2000, "the run logged almost nothing"
    for name, text in logs.items():
        for secret in (broker_password, db_password, api_key):
            assert secret not in text, f"{name} contains a secret"
    print(
        f"searched {sum(len(t) for t in logs.values())} characters of logs from {sorted(logs)}: "
        "no password or API key"
    )
