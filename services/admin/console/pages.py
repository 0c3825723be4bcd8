"""Serve the console: one server-rendered page, its script and style sheet.

No CDN and no build step: the page works on an isolated network. Data comes from
the REST API with the bearer token the operator enters (kept in sessionStorage,
so it goes away with the tab).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from sipmesh import __version__

SECTIONS = (
    ("subscribers", "Subscribers"),
    ("location", "Location"),
    ("domains", "Domains"),
    ("dispatcher", "Dispatcher"),
    ("lcr", "LCR"),
    ("address", "ACL"),
    ("bans", "Bans"),
    ("accounting", "Accounting"),
    ("charts", "Statistics"),
    ("versions", "Scripts & instances"),
)
_TYPES = {".js": "text/javascript", ".css": "text/css"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def render_index(directory: Path) -> str:
    template = (directory / "index.html").read_text()
    nav = "\n".join(
        f'<a href="#{key}" data-section="{key}">{html.escape(title)}</a>' for key, title in SECTIONS
    )
    return template.replace("{{nav}}", nav).replace("{{version}}", html.escape(__version__))


def add_console(app: FastAPI, directory: Path) -> None:
    page = render_index(directory)
    assets = {name: (directory / name).read_bytes() for name in ("app.js", "app.css", "chart.js")}

    @app.get("/console/", include_in_schema=False)
    async def index() -> Response:
        return HTMLResponse(page, headers=_SECURITY_HEADERS)

    @app.get("/console/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        body = assets.get(name)
        if body is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        media = _TYPES.get(Path(name).suffix, "application/octet-stream")
        return Response(body, media_type=media, headers=_SECURITY_HEADERS)
