"""API key administration for the CLI (`conveyor-api keys ...`)."""

from __future__ import annotations

import uuid

from conveyor_core.store import ApiKey, utcnow
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor_api.auth import hash_secret, new_secret


class KeyAdminError(Exception):
    """A key operation that cannot be done (duplicate name, unknown key)."""


def create_key(engine: Engine, name: str, admin: bool) -> tuple[ApiKey, str]:
    """Store a new key; return it with its secret, which is never stored nor shown again."""
    secret = new_secret()
    key = ApiKey(
        id=uuid.uuid4(), name=name, key_hash=hash_secret(secret), admin=admin, created_at=utcnow()
    )
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            session.add(key)
    except IntegrityError as error:
        raise KeyAdminError(f"a key named {name!r} already exists") from error
    return key, secret


def list_keys(engine: Engine) -> list[ApiKey]:
    with Session(engine) as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(engine: Engine, name: str) -> None:
    with engine.begin() as connection:
        result = connection.execute(
            update(ApiKey)
            .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if result.rowcount == 0:
        raise KeyAdminError(f"no active key named {name!r}")
