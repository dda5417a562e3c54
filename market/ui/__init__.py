"""The web dashboard: server-rendered pages under /ui, served by the marketplace app.

`router` holds the pages (outside the OpenAPI schema); `static_files()` serves the stylesheet
from the package, so the pages need nothing from the internet.
"""

from __future__ import annotations

from starlette.staticfiles import StaticFiles

from market.ui.render import STATIC
from market.ui.routes import router

__all__ = ["router", "static_files"]


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
