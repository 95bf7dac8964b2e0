"""`conveyor-api`: serve the gateway, or migrate the job store."""

from __future__ import annotations

import typer
import uvicorn
from conveyor_core.logs import configure_logging
from conveyor_core.settings import get_settings
from conveyor_core.store.migrate import upgrade_to_head

cli = typer.Typer(help="Conveyor REST gateway.", no_args_is_help=True, add_completion=False)


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address [CONVEYOR_API_HOST]."),
    port: int | None = typer.Option(None, help="Port [CONVEYOR_API_PORT]."),
) -> None:
    """Run the gateway (one process; scale with replicas)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    from conveyor_api.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
    )


@cli.command()
def migrate() -> None:
    """Upgrade the job store schema to the latest Alembic revision, then exit."""
    settings = get_settings()
    configure_logging(settings.log_level)
    upgrade_to_head(settings.database_url.get_secret_value())
    typer.echo("job store is at the latest schema")


def main() -> None:
    cli()
