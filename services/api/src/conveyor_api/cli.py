"""`conveyor-api`: serve the gateway, migrate the job store, manage API keys."""

from __future__ import annotations

import typer
import uvicorn
from conveyor_core.logs import configure_logging
from conveyor_core.settings import get_settings
from conveyor_core.store.engine import make_sync_engine
from conveyor_core.store.migrate import upgrade_to_head
from rich.console import Console
from rich.table import Table
from sqlalchemy import URL, Engine, make_url
from sqlalchemy.exc import OperationalError

from conveyor_api.keys import KeyAdminError, create_key, list_keys, revoke_key

# Without a command it serves: the images share one Dockerfile and its entrypoint takes no
# arguments, so `docker run conveyor/api` must start the gateway as a worker image starts
# its worker.
cli = typer.Typer(
    help="Conveyor REST gateway (no command: serve).",
    invoke_without_command=True,
    add_completion=False,
)


@cli.callback()
def default(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        serve(host=None, port=None)


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address [CONVEYOR_API_HOST]."),
    port: int | None = typer.Option(None, help="Port [CONVEYOR_API_PORT]."),
) -> None:
    """Run the gateway (one process; scale with replicas). The default command."""
    settings = get_settings()
    configure_logging(settings.log_level)
    from conveyor_api.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=settings.api_access_log,
        timeout_graceful_shutdown=20,
    )


@cli.command()
def migrate() -> None:
    """Upgrade the job store schema to the latest Alembic revision, then exit."""
    settings = get_settings()
    configure_logging(settings.log_level)
    upgrade_to_head(settings.database_url.get_secret_value())
    typer.echo("job store is at the latest schema")


keys_cli = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


def _engine() -> Engine:
    settings = get_settings()
    configure_logging("WARNING")
    upgrade_to_head(settings.database_url.get_secret_value())
    return make_sync_engine(settings.database_url.get_secret_value())


@keys_cli.command("create")
def create(
    name: str = typer.Argument(help="Who the key is for, e.g. a service name."),
    admin: bool = typer.Option(False, help="Let the key see and cancel every job."),
) -> None:
    """Create a key and print its secret (shown once; only a hash is stored)."""
    try:
        key, secret = create_key(_engine(), name, admin)
    except KeyAdminError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"created key {key.name!r} ({'admin' if admin else 'own jobs only'})", err=True)
    typer.echo(secret)


@keys_cli.command("list")
def list_() -> None:
    """List keys (never their secrets)."""
    table = Table("name", "id", "admin", "created", "revoked")
    for key in list_keys(_engine()):
        table.add_row(
            key.name,
            str(key.id),
            "yes" if key.admin else "no",
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    Console().print(table)


@keys_cli.command("revoke")
def revoke(name: str = typer.Argument(help="Name of the key to revoke.")) -> None:
    """Revoke a key: gateways refuse it within CONVEYOR_AUTH_CACHE_TTL_S."""
    try:
        revoke_key(_engine(), name)
    except KeyAdminError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"revoked key {name!r}")


def main() -> None:
    try:
        cli()
    except OperationalError as error:  # raised before anything was served or written
        url = make_url(get_settings().database_url.get_secret_value())
        typer.echo(f"conveyor-api: {_unreachable_store(url, error)}", err=True)
        raise SystemExit(1) from None


def _unreachable_store(url: URL, error: OperationalError) -> str:
    """One line that names the job store and says what to do, instead of a traceback."""
    where = url.render_as_string(hide_password=True)
    reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    if "does not exist" in reason and url.database:
        create = (
            f"createdb -h {url.host or '127.0.0.1'} -U {url.username or 'postgres'} {url.database}"
        )
        return f"the job store {where} does not exist ({reason}); create it: {create}"
    return f"cannot open the job store {where}: {reason} (CONVEYOR_DATABASE_URL)"
