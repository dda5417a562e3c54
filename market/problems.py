"""One mapping from exceptions to `application/problem+json` (RFC 9457).

Domain errors (`PollenError`, crypto's included), FastAPI validation errors and Starlette's
HTTP errors (404 for unknown paths, 405, ...) all leave the service in the same shape:
{type, title, status, detail, instance, code, ...extra}. So does an unexpected exception
(500, logged, no internals in the body). `install` also writes this into the OpenAPI schema.
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
from market.errors import MarketError, RateLimitedError, UploadInProgressError

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
    if status in (502, 503):
        # A service we depend on (the payment rail, the blob store) failed: expected, retried.
        log.warning("%s on %s: %s", exc.code, request.url.path, exc.message)
    elif status >= 500:
        log.error("unexpected domain error on %s: %r", request.url.path, exc)
    extra = exc.extra if isinstance(exc, MarketError) else {}
    response = problem(
        request, status=status, code=exc.code, title=exc.title, detail=exc.message, **extra
    )
    if isinstance(exc, RateLimitedError | UploadInProgressError):
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


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `code` is a stable slug, other members vary.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the service really sends on errors: every operation
    answers 4xx with `application/problem+json` (FastAPI documents only a 422 in its own
    `HTTPValidationError` shape, which this service never sends)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Validation failed", "content": content}
                responses["4XX"] = {"description": "Refused (problem details)", "content": content}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug: logged in full here, answered without internals (the server still re-raises it).
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        status=500,
        code="internal-error",
        title="Internal server error",
        detail="the server failed to handle this request; it has been logged",
    )


def install(app: FastAPI) -> None:
    """Register the handlers on an app, and document them in its OpenAPI schema."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(PollenError, _pollen_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _document_problems(app)
