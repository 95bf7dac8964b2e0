"""`/docs` and `/redoc`: the API reference, served whole by the gateway.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, so they are blank on a
cluster without egress. These load the bundles that the pinned `fastapi-offline`
package ships, and start them from files, not inline scripts, under a
Content-Security-Policy that allows scripts from this origin only.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from conveyor_api.routes import console

PAGES_DIR = Path(__file__).resolve().parent.parent / "docs_pages"
BUNDLES_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"

ASSETS = {
    "swagger-ui-bundle.js": (BUNDLES_DIR, "text/javascript"),
    "swagger-ui.css": (BUNDLES_DIR, "text/css"),
    "redoc.standalone.js": (BUNDLES_DIR, "text/javascript"),
    "favicon.png": (BUNDLES_DIR, "image/png"),
    "swagger-init.js": (PAGES_DIR, "text/javascript"),
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # Both renderers set styles from script (React style attributes, styled-components).
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",  # ReDoc searches in a worker it builds from a blob
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
# The console's headers, with this policy.
SECURITY_HEADERS = {**console.SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}

router = APIRouter(include_in_schema=False)
READ = ["GET", "HEAD"]


@router.api_route("/docs", methods=READ)
async def swagger_ui() -> FileResponse:
    return FileResponse(PAGES_DIR / "swagger.html", headers=SECURITY_HEADERS)


@router.api_route("/redoc", methods=READ)
async def redoc() -> FileResponse:
    return FileResponse(PAGES_DIR / "redoc.html", headers=SECURITY_HEADERS)


@router.api_route("/docs/static/{name}", methods=READ)
async def asset(name: str) -> FileResponse:
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no docs file {name!r}")
    directory, media_type = found
    return FileResponse(directory / name, media_type=media_type, headers=SECURITY_HEADERS)
