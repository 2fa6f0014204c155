"""JSON request bodies: parsed strictly, and anything that is not JSON refused with 415.

Routers whose routes take a body use :class:`JsonRoute` (``APIRouter(route_class=JsonRoute)``).
Its parser is pydantic's, which holds to RFC 8259: invalid UTF-8, a lone surrogate escape
(``"\\ud800"``), ``NaN``, nesting past its depth limit and numbers too long to read are all
malformed JSON, answered 422 like any other, before a handler sees a string it could not
encode again.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

from recsys.errors import UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def is_json(content_type: str) -> bool:
    """``application/json`` or any ``application/*+json``, whatever its parameters."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class JsonRequest(Request):
    """A request whose ``json()`` is pydantic's strict parser; what it refuses is a JSON error."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = pydantic_core.from_json(await self.body(), allow_inf_nan=False)
            except ValueError as exc:  # FastAPI answers a JSONDecodeError with a 422
                raise json.JSONDecodeError(str(exc), "", 0) from exc
        return self._json


class JsonRoute(APIRoute):
    """A route whose body, when it takes one, must be JSON (415 otherwise), parsed strictly."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive)
            if takes_body and not await _sent_as_json(request):
                raise UnsupportedMediaType(f"the request body must be JSON ({JSON_MEDIA_TYPE})")
            return await handler(request)

        return strict


async def _sent_as_json(request: Request) -> bool:
    """A JSON content type, or none with an empty body (then FastAPI says the body is missing)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return not await request.body()
    return is_json(content_type)
