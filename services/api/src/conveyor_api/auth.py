"""API keys: `Authorization: Bearer cnv_...`, hashed at rest, each job owned by its key.

A key sees and cancels only its own jobs (another key's job is a 404, as if it did not
exist); an admin key sees all. With CONVEYOR_AUTH_ENABLED=false (local use only) every
caller is the same anonymous admin.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from conveyor_core.store import gateway_ops
from fastapi import Depends, HTTPException, status
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPBearer

from conveyor_api.unit_of_work import WorkRunner

KEY_PREFIX = "cnv_"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Keys carry 256 random bits: a plain SHA-256 cannot be brute-forced, unlike a password.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    owner: str
    name: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner to restrict queries to; None for an admin, who sees every job."""
        return None if self.admin else self.owner


ANONYMOUS = Principal(owner="", name="anonymous", admin=True)


class KeyVerifier:
    """Checks bearer secrets against the job store, remembering answers for a short TTL."""

    def __init__(self, runner: WorkRunner, ttl_s: float) -> None:
        self.runner = runner
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def verify(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        key = await self.runner.read(gateway_ops.active_key(digest))
        principal = (
            None if key is None else Principal(owner=str(key.id), name=key.name, admin=key.admin)
        )
        if len(self._cache) > 10_000:  # bounded: unknown secrets must not grow it forever
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal


class BearerKeyAuth(HTTPBearer):
    """The caller behind `Authorization: Bearer <key>`, as one dependency.

    A security scheme in OpenAPI like a plain HTTPBearer, but it verifies the key itself:
    FastAPI resolves every dependency level per request with its own bookkeeping, and
    authentication runs on every authenticated request.
    """

    def __init__(self) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",  # the name OpenAPI documented before this class
            description="An API key: `conveyor-api keys create`.",
        )

    async def __call__(self, request: HTTPConnection) -> Principal:  # type: ignore[override]
        if not request.app.state.settings.auth_enabled:
            return ANONYMOUS
        challenge = {"WWW-Authenticate": "Bearer"}
        credentials = await super().__call__(request)
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers=challenge,
            )
        verifier: KeyVerifier = request.app.state.key_verifier
        principal = await verifier.verify(credentials.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key", headers=challenge
            )
        return principal


authenticate = BearerKeyAuth()
PrincipalDep = Annotated[Principal, Depends(authenticate)]
