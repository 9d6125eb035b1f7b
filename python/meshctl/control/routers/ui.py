"""The dashboard at ``/ui``: static files shipped inside the package
(``meshctl/control/ui/``), served with a strict Content-Security-Policy.

The shell itself is public, like ``/healthz``: it holds no data. Everything
it shows comes from the API under the token the user logs in with, which the
page keeps in sessionStorage and sends as a bearer token. Left out of the
OpenAPI document: it is no API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from meshctl.control.kinds import REGISTRY

router = APIRouter(prefix="/ui", include_in_schema=False)

ROOT = Path(__file__).resolve().parent.parent / "ui"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: Only our own files, nothing inline, nothing from elsewhere. Styles set through the CSSOM
#: (element.style.x = ...) are not inline styles and need no 'unsafe-inline'.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # A new release's files are picked up at once: the files are small and served locally.
    "Cache-Control": "no-cache",
}


def _files() -> dict[str, Path]:
    """The servable files by name: a fixed set, so no request path ever reaches the filesystem."""
    return {p.name: p for p in ROOT.iterdir() if p.is_file() and p.suffix in _TYPES}


FILES = _files()


@router.get("")
def root() -> Response:
    # Relative asset URLs in index.html need the trailing slash.
    return RedirectResponse("/ui/", status_code=status.HTTP_308_PERMANENT_REDIRECT, headers=HEADERS)


@router.get("/kinds.json")
def kinds() -> Response:
    """The resource kinds and their API collections, from the registry, so the page lists no copy."""
    return JSONResponse([{"kind": e.name, "plural": e.plural} for e in REGISTRY], headers=HEADERS)


@router.get("/")
@router.get("/{name}")
def asset(name: str = "index.html") -> Response:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"/ui/{name} not found")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)
