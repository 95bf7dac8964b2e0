"""`pip install conveyor-client` is a light install: no broker, store or worker libraries."""

from __future__ import annotations

import subprocess
import sys

from support.packaging import locked_closure

SERVICE_ONLY = {
    "celery",
    "kombu",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fsspec",
    "s3fs",
    "prometheus-client",
    "aio-pika",
    "fastapi",
    "uvicorn",
}


def test_the_client_installs_without_the_services_libraries():
    closure = locked_closure("conveyor-client")
    assert {"httpx", "httpx-sse", "typer", "rich", "pydantic"} <= closure
    assert not closure & SERVICE_ONLY, closure & SERVICE_ONLY
    assert "kubernetes" not in closure  # only with the `cluster` extra
    assert "kubernetes" in locked_closure("conveyor-client", "--extra", "cluster")


def test_the_cli_imports_without_the_services_libraries():
    blocked = ["celery", "kombu", "sqlalchemy", "alembic", "psycopg", "fsspec", "prometheus_client"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None  # importing it raises\n"
        "from conveyor_client.cli import app\n"
        "from conveyor_client import ConveyorClient, AsyncConveyorClient\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
