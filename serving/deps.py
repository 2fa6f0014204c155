"""Dependencies shared by the routes: the model holder, the registry, the admin check.

All ``async``: they do not block, and FastAPI would run a plain ``def`` in a thread.
"""

from __future__ import annotations

import hmac

from fastapi import Header, Request

from recsys.errors import AccessDenied, ModelUnavailable
from recsys.recommender import VersionRecommender
from serving.settings import ServingSettings
from serving.state import ModelHolder


async def holder(request: Request) -> ModelHolder:
    model_holder: ModelHolder = request.app.state.holder
    return model_holder


async def recommender(request: Request) -> VersionRecommender:
    current = (await holder(request)).current
    if current is None:
        raise ModelUnavailable("no verified model is loaded yet")
    return current


async def settings(request: Request) -> ServingSettings:
    serving_settings: ServingSettings = request.app.state.settings
    return serving_settings


async def require_admin(request: Request, authorization: str | None = Header(default=None)) -> None:
    """Bearer token check; admin routes are closed when no token is configured."""
    token = (await settings(request)).admin_token
    if token is None:
        raise AccessDenied("admin routes are closed: no admin token is configured")
    expected = f"Bearer {token.get_secret_value()}"
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise AccessDenied("missing or wrong bearer token")
