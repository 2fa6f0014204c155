"""Dependencies shared by the routes: the model holder, the recommender, the settings (access
checks are in :mod:`serving.auth`).

All ``async``: they do not block, and FastAPI would run a plain ``def`` in a thread.
"""

from __future__ import annotations

from fastapi import Request

from recsys.errors import ModelUnavailable
from recsys.scoring.recommender import VersionRecommender
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
