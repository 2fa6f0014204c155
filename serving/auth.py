"""Who is calling: the API key a request presents, checked against the scopes of its route.

Clients send ``Authorization: Bearer KEY``. The dashboard, opened in a browser, also takes
HTTP Basic credentials with the key as the password (any user name), so a browser can ask
for it. Each guarded route depends on one of the dependencies below; they declare the
security schemes in the OpenAPI document. The key itself is never logged nor repeated.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.http import HTTPBase

from recsys.access.guard import Client, Guard
from recsys.access.scopes import Scope

API_KEY = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="rsk_…",
    description="An API key (`recsys keys create NAME --scopes …`), or the admin token.",
    auto_error=False,
)
DASHBOARD_LOGIN = HTTPBase(
    scheme="basic",
    scheme_name="dashboardLogin",
    description="For a browser opening the dashboard: any user name, an API key as the password.",
    auto_error=False,
)
BEARER_CHALLENGE = 'Bearer realm="recsys"'
BASIC_CHALLENGE = 'Basic realm="recsys dashboard", charset="UTF-8"'
CHALLENGES = "auth_challenges"
"""``request.state`` attribute: the ``WWW-Authenticate`` challenges of a 401 on this route."""

Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY)]
Login = Annotated[HTTPAuthorizationCredentials | None, Security(DASHBOARD_LOGIN)]
Dependency = Callable[..., Coroutine[Any, Any, Client]]


def require(*scopes: Scope) -> Dependency:
    """A dependency answering the calling :class:`Client`, who must hold one of ``scopes``."""

    async def client(request: Request, bearer: Bearer) -> Client:
        return _guard(request).authorize(bearer.credentials if bearer else None, scopes)

    return client


def require_login(*scopes: Scope) -> Dependency:
    """As :func:`require`, also taking the key as the password of HTTP Basic credentials."""

    async def client(request: Request, bearer: Bearer, login: Login) -> Client:
        setattr(request.state, CHALLENGES, (BASIC_CHALLENGE, BEARER_CHALLENGE))
        key = bearer.credentials if bearer else _password(login)
        return _guard(request).authorize(key, scopes)

    return client


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def _password(login: HTTPAuthorizationCredentials | None) -> str | None:
    """The password of Basic credentials, ``None`` for anything else."""
    if login is None or login.scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(login.credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


RECOMMEND = require(Scope.RECOMMEND)
FEEDBACK = require(Scope.FEEDBACK)
ADMIN = require(Scope.ADMIN)
READ = require(Scope.RECOMMEND, Scope.ADMIN)
"""Read-only routes (models, rollout plan): what a recommending client or an operator may read."""
DASHBOARD = require_login(Scope.RECOMMEND, Scope.ADMIN)
