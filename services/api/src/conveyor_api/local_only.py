"""With authentication off, answer only the local machine's own clients.

`make run` turns authentication off and binds 127.0.0.1, but a web page the user opens
can still reach that port: through DNS rebinding (its own host name, resolved to
127.0.0.1) or through a cross-site form POST to the seed-compatible endpoints, which
need no body. Both carry tell-tale headers: a Host that is not a local name, and an
Origin (or Sec-Fetch-Site) of another site.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(authority: str) -> str:
    """The name of `host[:port]` or `[v6]:port`, lower-cased."""
    return (urlsplit(f"//{authority}").hostname or "").lower()


def refusal(scope: Scope, local_hosts: frozenset[str]) -> Response | None:
    """A 400 or 403 for a request a web page made, else None."""
    headers = {key: value for key, value in scope["headers"] if key in _READ}
    host = headers.get(b"host", b"").decode("latin-1")
    if _host_name(host) not in local_hosts:
        return PlainTextResponse(
            "Invalid host header: with authentication off this gateway answers only "
            "local names (CONVEYOR_LOCAL_HOSTS)",
            400,
        )
    if scope["method"] not in UNSAFE_METHODS:
        return None
    origin = headers.get(b"origin", b"").decode("latin-1")
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1")
    foreign_origin = (
        origin not in ("", "null") and _host_name(urlsplit(origin).netloc) not in local_hosts
    )
    if foreign_origin or origin == "null" or site == "cross-site":
        return PlainTextResponse(
            "Cross-site request refused: with authentication off this gateway takes "
            "changes only from local pages and clients",
            403,
        )
    return None


_READ = frozenset({b"host", b"origin", b"sec-fetch-site"})
