"""The browser playground: one self-contained page to try voices, served by the frontend itself.

`GET /` redirects to `/playground`; the page and its three assets are files in `static/`, shipped
in the package and the image. Nothing is loaded from another origin (no CDN, font or script): the
service must work where only Google's network is reachable, and a third-party script on a page
that holds an API key could read it.

The page needs no key; it asks for one and sends it only in the `X-API-Key` header of its own
`/v1` calls, so every call still passes the gate. The key stays in the tab's sessionStorage.

Every answer here carries a strict Content-Security-Policy (scripts and styles only from this
origin, none inline; fetches only to this origin; no framing), plus nosniff and no-referrer.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from runtime.frontend.errors import APIError

__all__ = ["PAGE_HEADERS", "router"]

PAGE_PATH = "/playground"

# Served files and their types; anything else under /playground/ is a 404.
_ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",  # the /v1 calls; the key can only ever travel to this origin
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # A redeploy changes the files; they are small, so revalidating every time costs nothing.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@cache
def _static(name: str) -> bytes:
    return (resources.files("runtime.frontend") / "static" / name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(PAGE_PATH, status_code=307, headers=PAGE_HEADERS)


@router.get(PAGE_PATH)
async def page() -> Response:
    return Response(_static("playground.html"), media_type="text/html; charset=utf-8",
                    headers=PAGE_HEADERS)


@router.get(PAGE_PATH + "/{name}")
async def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise APIError(404, f"no such file: {PAGE_PATH}/{name}", code="not_found",
                       headers=PAGE_HEADERS)
    return Response(_static(name), media_type=media_type, headers=PAGE_HEADERS)
