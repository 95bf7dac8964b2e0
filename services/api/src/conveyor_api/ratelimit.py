"""Per-key submission rate limit: a token bucket per key, in this gateway process."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.requests import HTTPConnection

from conveyor_api.auth import BearerKeyAuth, Principal


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, updated)

    def take(self, owner: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        if self.rate_per_s <= 0:
            return 0.0
        now = time.monotonic()
        tokens, updated = self._buckets.get(owner, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate_per_s)
        if tokens >= 1:
            self._buckets[owner] = (tokens - 1, now)
            return 0.0
        self._buckets[owner] = (tokens, now)
        return (1 - tokens) / self.rate_per_s


class SubmitterAuth(BearerKeyAuth):
    """The authenticated caller, once it is within its submission rate.

    The same security scheme as every authenticated route, extended rather than depended
    on: one dependency level per submission instead of two.
    """

    async def __call__(self, request: HTTPConnection) -> Principal:  # type: ignore[override]
        principal = await super().__call__(request)
        take_submit_token(request, principal)
        return principal


def take_submit_token(request: HTTPConnection, principal: Principal) -> None:
    """Spend one of the caller's submissions, or refuse with 429 and when to retry."""
    buckets: TokenBuckets = request.app.state.submit_buckets
    wait_s = buckets.take(principal.owner)
    if wait_s:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"submission rate limit of {buckets.rate_per_s:g}/s exceeded; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )


submitter = SubmitterAuth()
SubmitterDep = Annotated[Principal, Depends(submitter)]
