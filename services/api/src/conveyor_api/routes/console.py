"""`/ui`: the web console, a few static pages whose scripts call the REST API.

The pages hold no data: their scripts fetch it with the caller's API key, so the gateway
serves the same bytes to everyone and authorization stays where it is, in the API. Only
the files listed in ASSETS are served, each with a strict Content-Security-Policy (scripts
and styles from this origin only, no inline code, no requests elsewhere).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import FileResponse

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

ASSETS = {
    "console.css": "text/css",
    "api.js": "text/javascript",
    "sse.js": "text/javascript",
    "view.js": "text/javascript",
    "list.js": "text/javascript",
    "job.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidate rather than serve stale code.
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/ui", include_in_schema=False)
READ = ["GET", "HEAD"]


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(CONSOLE_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)


@dataclass(frozen=True)
class Page:
    title: str
    script: str
    in_nav: bool = False  # the page the nav's "Jobs" link is (aria-current)


CONSOLE_PAGES = {
    "index.html": Page("Jobs", "list.js", in_nav=True),
    "job.html": Page("Job", "job.js"),
}


def _page(name: str, page: Page) -> bytes:
    """A page's <main> in the layout every page shares (head, header, the API key's status
    and form): put together once at import, no templating per request."""
    layout = string.Template((CONSOLE_DIR / "layout.html").read_text())
    return layout.substitute(
        title=page.title,
        script=page.script,
        current=' aria-current="page"' if page.in_nav else "",
        main=(CONSOLE_DIR / name).read_text(),
    ).encode()


PAGES = {name: _page(name, page) for name, page in CONSOLE_PAGES.items()}


def _html(name: str) -> Response:
    return Response(PAGES[name], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.api_route("", methods=READ)
@router.api_route("/", methods=READ)
async def job_list_page() -> Response:
    return _html("index.html")


@router.api_route("/jobs/{job_id}", methods=READ)
async def job_page(job_id: str) -> Response:
    # The page's script reads the id from its URL and asks the API, which answers 404 for an
    # unknown id or another key's job; the page itself is the same for every id.
    return _html("job.html")


@router.api_route("/static/{name}", methods=READ)
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no console file {name!r}", headers=SECURITY_HEADERS
        )
    return _file(name, media_type)
