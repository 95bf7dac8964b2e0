"""Typed errors: one class per kind of refusal, each with the status and the API's detail."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

LOCATIONS = ("body", "query", "path", "header")


class ConveyorError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(ConveyorError):
    """The gateway could not be reached at all (refused, DNS, TLS, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Conveyor at {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class FieldError:
    """One entry of a 422's `detail`: where (`loc`), what (`msg`) and its kind (`type`).

    `field` names it as the user wrote it: `params.hyperparameters.n_estimators` rather
    than pydantic's `body.ml.train.params.random_forest.hyperparameters.n_estimators`,
    whose `ml.train` and `random_forest` are union tags, not keys of the request.
    """

    loc: tuple[str | int, ...]
    msg: str
    type: str = ""
    field: str = ""

    def __str__(self) -> str:
        return f"{self.field or _dotted(self.loc)}: {self.msg}"


def _dotted(parts: Any) -> str:
    return ".".join(str(part) for part in parts) or "request"


_ABSENT = object()


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def user_field(loc: tuple[str | int, ...], body: Any) -> str:
    """The location of an error as a path through the body the caller sent.

    Walks `body` along `loc`, skipping parts that are not keys of the request (the tags
    of tagged unions); the last part is kept even when absent (a missing field).
    """
    parts = list(loc)
    location = parts.pop(0) if parts and parts[0] in LOCATIONS else "body"
    if location != "body":
        return _dotted(parts)
    path: list[str | int] = []
    node = body
    for index, part in enumerate(parts):
        step = _child(node, part)
        if step is not _ABSENT:
            node = step
        elif isinstance(node, dict) and index < len(parts) - 1:
            continue  # a union tag: not a key of what was sent
        else:
            path.extend(parts[index:])
            break
        path.append(part)
    return _dotted(path)


class ApiError(ConveyorError):
    """The gateway answered with an error status."""

    def __init__(
        self,
        status: int,
        detail: Any,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        self.retry_after = retry_after
        super().__init__(self.describe())

    def describe(self) -> str:
        detail = self.detail if isinstance(self.detail, str) else repr(self.detail)
        return f"{self.status}: {detail}"


class Unauthorized(ApiError):
    """401: no API key, or an invalid or revoked one."""


class Forbidden(ApiError):
    """403: refused by policy (a command outside the catalog, a non-admin key...)."""


class NotFound(ApiError):
    """404: no such job (or another key's), artifact or endpoint."""


class Conflict(ApiError):
    """409: the job already finished, or an Idempotency-Key reused with another body."""


class PayloadTooLarge(ApiError):
    """413: the body or upload is larger than the gateway accepts."""


class ValidationFailed(ApiError):
    """422: the request is invalid; `fields` says which field and why."""

    request_body: Any = None

    @property
    def fields(self) -> list[FieldError]:
        if not isinstance(self.detail, list):
            return []
        fields = []
        for item in self.detail:
            if isinstance(item, dict):
                loc = tuple(item.get("loc", ()))
                fields.append(
                    FieldError(
                        loc=loc,
                        msg=str(item.get("msg", "")),
                        type=str(item.get("type", "")),
                        field=user_field(loc, self.request_body),
                    )
                )
        return fields

    def describe(self) -> str:
        fields = self.fields
        if not fields:
            return super().describe()
        return "invalid request: " + "; ".join(str(field) for field in fields)


class RateLimited(ApiError):
    """429: too many submissions or queued jobs for this key; retry after `retry_after` s."""


class Unavailable(ApiError):
    """503: the broker or the job store is down; nothing was queued. Retry later."""


class ServerError(ApiError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for an error response whose body has been read."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    error = kind(
        status,
        detail,
        method=response.request.method,
        url=str(response.request.url),
        retry_after=_retry_after(response),
    )
    if isinstance(error, ValidationFailed):
        error.request_body = _sent_json(response.request)
        error.args = (error.describe(),)
    return error


def _sent_json(request: httpx.Request) -> Any:
    """The JSON body the request carried, if any (streamed bodies are not kept)."""
    try:
        return json.loads(request.content) if request.content else None
    except (httpx.RequestNotRead, ValueError):
        return None
