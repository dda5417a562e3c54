"""One mapping from exceptions to `application/problem+json` (RFC 9457).

Domain errors (`PollenError`, crypto's included), FastAPI validation errors and Starlette's
HTTP errors (404 for unknown paths, 405, ...) all leave the service in the same shape:
{type, title, status, detail, instance, code, ...extra}.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crypto.errors import (
    AggregateError,
    CryptoError,
    EnvelopeTooLargeError,
    KeyFileError,
    PollenError,
)
from market.errors import MarketError, TooManyFailedAttemptsError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def status_for(exc: PollenError) -> int:
    """The HTTP status of a domain error; the only place this decision is made."""
    if isinstance(exc, MarketError):
        return exc.status
    if isinstance(exc, EnvelopeTooLargeError):
        return 413
    if isinstance(exc, AggregateError):
        return 409
    if isinstance(exc, KeyFileError):
        # The server never handles secret keys: reaching this is our bug.
        return 500
    if isinstance(exc, CryptoError):
        return 422
    return 500


def problem(
    request: Request, *, status: int, code: str, title: str, detail: str, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:pollen:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
    }
    body.update(extra)
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON)


async def _pollen_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PollenError)
    status = status_for(exc)
    if status >= 500:
        log.error("unexpected domain error on %s: %r", request.url.path, exc)
    extra = exc.extra if isinstance(exc, MarketError) else {}
    response = problem(
        request, status=status, code=exc.code, title=exc.title, detail=exc.message, **extra
    )
    if isinstance(exc, TooManyFailedAttemptsError):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(
        request,
        status=422,
        code="validation-error",
        title="Request validation failed",
        detail="; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)[:2000],
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthenticated"}
    code = {404: "not-found", 405: "method-not-allowed", 401: "unauthenticated"}.get(
        exc.status_code, f"http-{exc.status_code}"
    )
    response = problem(
        request,
        status=exc.status_code,
        code=code,
        title=titles.get(exc.status_code, "HTTP error"),
        detail=str(exc.detail),
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(PollenError, _pollen_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
