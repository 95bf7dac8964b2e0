"""A PostgreSQL database per run, created and dropped over an admin connection."""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import Iterator

import psycopg

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def postgres_database(prefix: str, admin_dsn: str = POSTGRES_ADMIN_DSN) -> Iterator[str]:
    """A fresh database `<prefix><random>` on the server of `admin_dsn` (a postgresql://
    URL); yields its SQLAlchemy URL (same user and server) and drops it afterwards, even
    with connections still open."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin_url = urllib.parse.urlsplit(admin_dsn)
    if admin_url.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {admin_dsn!r}")
    database_url = admin_url._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
