"""Engines for the job store: sync for workers, async for the gateway, one URL for both."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


POOL_RECYCLE_S = 300
# A JSON escape of NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def store_json(value: Any) -> str:
    """JSON text that every backend stores: what the JSON columns are written with.

    Params never hold NaN, Infinity or NUL (validation refuses them with a 422), but a
    command's output or a computed cell may, and the job's result must still be written:
    PostgreSQL's jsonb rejects all three. Non-finite numbers become null, as pydantic
    writes them, and NUL becomes U+FFFD.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: the rare path walks the value
        text = json.dumps(_finite(value), allow_nan=False)
    if "\\u0000" in text:
        text = _ESCAPED_NUL.sub(r"\1\\ufffd", text)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the gateway read while a worker writes; busy_timeout rides out short locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sync_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed


def async_url(url: str) -> URL:
    parsed = sync_url(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def _prepare_sqlite_dir(url: URL) -> None:
    from pathlib import Path

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def make_sync_engine(url: str, **kwargs: Any) -> Engine:
    """The workers' engine (one per process: connections must not cross a fork).

    Connections are kept (SQLite: opening one and setting its pragmas cost as much as a
    small transaction) and not pinged: a connection the server dropped fails its first
    statement, SQLAlchemy replaces the pool's connections, and the worker's store retry
    (`_retrying` in the runtime) runs the transaction again. pool_recycle renews
    connections before a proxy or firewall drops them for idling.
    """
    parsed = sync_url(url)
    pool: dict[str, Any] = {} if "poolclass" in kwargs else {"pool_size": 2, "max_overflow": 4}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_dir(parsed)
        engine = create_engine(parsed, json_serializer=store_json, **pool, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        parsed, json_serializer=store_json, pool_recycle=POOL_RECYCLE_S, **pool, **kwargs
    )


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # Imported here: only the gateway is async, and workers need not install greenlet.
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_dir(parsed)
        engine = create_async_engine(parsed, json_serializer=store_json, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pool_pre_ping: it costs a round trip per checkout, on every request. A connection
    # the server dropped fails its first statement instead and SQLAlchemy replaces every
    # pooled connection: the gateway's runner (conveyor_api.unit_of_work) runs such a unit
    # of work once more (a write that could double anything fails instead).
    # pool_recycle renews connections before a proxy or firewall drops them for idling.
    return create_async_engine(
        parsed,
        json_serializer=store_json,
        pool_size=10,
        max_overflow=20,
        pool_recycle=POOL_RECYCLE_S,
        **kwargs,
    )
