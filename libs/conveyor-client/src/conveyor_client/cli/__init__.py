"""The `conveyor` command line (typer + rich) over conveyor_client."""

from conveyor_client.cli.app import app, main

__all__ = ["app", "main"]
