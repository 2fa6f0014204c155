"""The one place where service errors become HTTP responses, and where they are documented.

Every error has one shape, :class:`serving.schemas.ErrorBody`:
``{"error": "<code>", "message": "<one human line>", "request_id": "<id or null>"}``.
:class:`RecsysError` subclasses answer their own status and code; a request that fails
validation answers 422 with a message naming the field (never the value sent); an unknown
route 404, a wrong method 405 (with ``Allow``); anything unexpected a bare 500 without a
traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recsys.errors import InvalidRequest, RecsysError
from serving.schemas import ErrorBody
from serving.validation import describe, shorten

log = logging.getLogger(__name__)
SERVICE_UNAVAILABLE = 503
"""Every 503 says when to retry (no model loaded yet, event backbone unreachable)."""
NOT_FOUND, METHOD_NOT_ALLOWED = 404, 405
DESCRIPTIONS = {
    403: "Admin route: the bearer token is missing or wrong, or no admin token is configured.",
    404: "The model version, track or playlist named is not known.",
    409: "The registry's state refuses the change (the promotion gate, nothing to roll back).",
    413: "The request body is over the configured size limit.",
    415: "The request body is not JSON (send Content-Type: application/json).",
    422: "The request is malformed or a value is out of range; the message names the field.",
    503: "Not available now (the replica is full, no verified model is loaded, an artifact is "
    "damaged, or the event backbone did not confirm); retry after Retry-After seconds.",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}


def documented(*statuses: int, notes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route for these error statuses, each of the :class:`ErrorBody` shape.

    Parameters
    ----------
    *statuses : int
        Statuses the route can answer, among those of ``DESCRIPTIONS``.
    notes : mapping, optional
        What a status means for this route, instead of its general description.

    Returns
    -------
    dict
        The route decorator's ``responses=`` argument.
    """
    return {
        status: {"model": ErrorBody, "description": (notes or {}).get(status, DESCRIPTIONS[status])}
        | ({"headers": RETRY_AFTER_HEADER} if status == SERVICE_UNAVAILABLE else {})
        for status in statuses
    }


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Give every error of ``app`` the documented shape: service errors, validation, routing, the rest."""

    @app.exception_handler(RecsysError)
    async def recsys_error(request: Request, exc: RecsysError) -> JSONResponse:
        retry = exc.http_status == SERVICE_UNAVAILABLE
        headers = {"Retry-After": str(retry_after_s)} if retry else None
        return error_response(request, exc.http_status, exc.code, exc.message, headers=headers)

    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(HTTPException)(http_error)
    app.exception_handler(Exception)(unexpected)


def error_response(
    request: Request, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The documented error body, with the request's id."""
    request_id = getattr(request.state, "request_id", None)
    body = ErrorBody(error=code, message=shorten(message), request_id=request_id)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422, naming the first field at fault; the values sent are never repeated."""
    return error_response(request, InvalidRequest.http_status, InvalidRequest.code, describe(exc.errors()))


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Routing's own errors (no such route, wrong method) and any other ``HTTPException``."""
    status, headers = exc.status_code, exc.headers
    if status == NOT_FOUND:
        return error_response(request, status, "not_found", "no such route (see /docs)", headers=headers)
    if status == METHOD_NOT_ALLOWED:
        allowed = (headers or {}).get("Allow", "")
        message = f"method not allowed here; allowed: {allowed}" if allowed else "method not allowed here"
        return error_response(request, status, "method_not_allowed", message, headers=headers)
    phrase = _phrase(status)
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    return error_response(request, status, _code(phrase), message, headers=headers)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bare 500: the traceback goes to the log, never to the caller."""
    log.exception("unhandled error on %s", request.url.path)
    return error_response(request, 500, "internal_error", "internal error")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _code(phrase: str) -> str:
    return phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")
