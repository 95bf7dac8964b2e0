"""A cap on request body size, enforced while the body streams in."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor_api.metrics import SUBMISSIONS_REJECTED, is_submission

UPLOAD_PREFIX = "/v1/files/"


class BodySizeLimit:
    """Answer 413 once a body passes its cap, whether or not Content-Length was sent.

    File uploads get their own, larger cap; every other body the small one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = str(scope.get("path", "")).startswith(UPLOAD_PREFIX)
        limit = self.max_upload_bytes if is_upload else self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return
        if declared is not None:
            # Without Transfer-Encoding the server reads exactly Content-Length bytes of
            # body, so the check above capped it: no need to count it as it streams.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        if is_submission(scope):
            SUBMISSIONS_REJECTED.labels("limit").inc()
        body = json.dumps({"detail": f"request body exceeds {limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when the body is chunked (or the header is not a size)."""
    length = None
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return None  # it overrides Content-Length: count the body as it streams
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
    return length
