"""Turning page data into HTML responses, and refusals into HTML pages.

One Jinja2 environment (autoescaped) with the formatting filters and the chart function; one
route class, `HtmlRoute`, so a domain error raised under /ui becomes an HTML page with the
status the JSON API would use (404, 403, ...), and a page that needs a session redirects to
the login form instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from crypto.errors import PollenError
from market.errors import AuthenticationError
from market.models import Account
from market.problems import status_for
from market.ui import format as fmt
from market.ui.charts import line_chart

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"

# No script, no third-party origin: the pages work offline and nothing else may run in them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(
    money=fmt.money, when=fmt.when, percent=fmt.percent, number=fmt.number, short=fmt.short
)
env.globals.update(line_chart=line_chart, percent=fmt.percent, money_axis=fmt.money_axis)

_TITLES = {401: "Sign in needed", 403: "Not allowed", 404: "Not found", 422: "Bad request"}


def page(
    request: Request,
    template: str,
    *,
    viewer: Account | None,
    title: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render `template` inside the layout, for `viewer` (None when signed out)."""
    html = env.get_template(template).render(
        viewer=viewer, title=title, path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    viewer = getattr(request.state, "ui_viewer", None)
    return page(
        request,
        "error.html",
        viewer=viewer,
        title=_TITLES.get(status, "Something went wrong"),
        status_code=status,
        status=status,
        message=message,
    )


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='/')}", status_code=303)


class HtmlRoute(APIRoute):
    """A route whose refusals are pages, not `application/problem+json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def html_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationError:
                return login_redirect(request)
            except PollenError as exc:
                status = status_for(exc)
                if status >= 500:
                    log.error("dashboard error on %s: %r", request.url.path, exc)
                    return error_page(request, status, "The server could not show this page.")
                return error_page(request, status, exc.message)
            except RequestValidationError:
                return error_page(request, 422, "This address is not one the dashboard knows.")

        return html_handler
