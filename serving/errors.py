"""The one place where service errors become HTTP responses, and where they are documented.

Every error has one shape, :class:`serving.schemas.ErrorBody`:
``{"error": "<code>", "message": "<one human line>", "request_id": "<id or null>"}``.
:class:`RecsysError` subclasses answer their own status and code; a request that fails
validation answers 422 with a message naming the field (never the value sent); an unknown
route 404, a wrong method 405 (with ``Allow``); anything unexpected a bare 500 without a
traceback. A 401 says how to authenticate (``WWW-Authenticate``); a 429 and every 503 say
when to retry (``Retry-After``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recsys.access.scopes import Scope
from recsys.errors import InvalidRequest, RateLimited, RecsysError, Unauthenticated
from serving.auth import BEARER_CHALLENGE, CHALLENGES
from serving.schemas import ErrorBody
from serving.validation import describe, shorten

log = logging.getLogger(__name__)
SERVICE_UNAVAILABLE = 503
"""Every 503 says when to retry (no model loaded yet, event backbone unreachable)."""
UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, TOO_MANY_REQUESTS = 401, 403, 404, 405, 429
DESCRIPTIONS = {
    401: "No API key (send Authorization: Bearer KEY), or an unknown or revoked one.",
    403: "The API key lacks the scope this route needs.",
    404: "The model version, track or playlist named is not known.",
    409: "The registry's state refuses the change (the promotion gate, nothing to roll back).",
    413: "The request body is over the configured size limit.",
    415: "The request body is not JSON (send Content-Type: application/json).",
    422: "The request is malformed or a value is out of range; the message names the field.",
    429: "Over a feedback rate limit (events per API key or per listener); retry after Retry-After seconds.",
    503: "Not available now (the replica is full, no verified model is loaded, an artifact is "
    "damaged, or the event backbone did not confirm); retry after Retry-After seconds.",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}
ERROR_BODY_REF = f"#/components/schemas/{ErrorBody.__name__}"
HEADERS: dict[int, dict[str, Any]] = {
    UNAUTHORIZED: {
        "WWW-Authenticate": {
            "description": "The accepted scheme: Bearer (and Basic on /dashboard).",
            "schema": {"type": "string"},
        }
    },
    TOO_MANY_REQUESTS: RETRY_AFTER_HEADER,
    SERVICE_UNAVAILABLE: RETRY_AFTER_HEADER,
}


def documented(
    *statuses: int,
    notes: Mapping[int, str] | None = None,
    scopes: Collection[Scope] = (),
    html: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route for these error statuses, each of the :class:`ErrorBody` shape.

    Parameters
    ----------
    *statuses : int
        Statuses the route can answer, among those of ``DESCRIPTIONS``.
    notes : mapping, optional
        What a status means for this route, instead of its general description.
    scopes : collection of Scope, optional
        The scopes one of which the route needs: 401 and 403 are added, the 403 naming them.
    html : bool
        The route answers HTML: its errors are still JSON (another route must document
        :class:`ErrorBody`, whose schema they refer to).

    Returns
    -------
    dict
        The route decorator's ``responses=`` argument.
    """
    notes = dict(notes or {})
    if scopes:
        statuses = (UNAUTHORIZED, FORBIDDEN, *statuses)
        wanted = " or ".join(f"`{scope.value}`" for scope in Scope if scope in scopes)
        notes.setdefault(FORBIDDEN, f"The API key lacks the scope this route needs: {wanted}.")
    body: dict[str, Any] = (
        {"content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}}}
        if html
        else {"model": ErrorBody}
    )
    return {
        status: body
        | {"description": notes.get(status, DESCRIPTIONS[status])}
        | ({"headers": HEADERS[status]} if status in HEADERS else {})
        for status in sorted(set(statuses))
    }


def install(app: FastAPI, *, retry_after_s: int) -> None:
    """Give every error of ``app`` the documented shape: service errors, validation, routing, the rest."""

    @app.exception_handler(RecsysError)
    async def recsys_error(request: Request, exc: RecsysError) -> JSONResponse:
        headers = {}
        if exc.http_status == SERVICE_UNAVAILABLE:
            headers["Retry-After"] = str(retry_after_s)
        elif isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after_s)
        response = error_response(request, exc.http_status, exc.code, exc.message, headers=headers)
        if isinstance(exc, Unauthenticated):
            for challenge in getattr(request.state, CHALLENGES, (BEARER_CHALLENGE,)):
                response.headers.append("WWW-Authenticate", challenge)
        return response

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
