"""The ASGI application uvicorn imports: each worker of ``recsys serve --workers N`` (or of
``uvicorn serving.main:app``) builds it from the settings it reads from the environment."""

import logging

from recsys.settings import LOG_FORMAT
from serving.app import create_app
from serving.settings import get_settings

logging.basicConfig(level=get_settings().log_level.upper(), format=LOG_FORMAT)
app = create_app(get_settings())
