"""The ASGI application uvicorn imports (settings from the environment)."""

from serving.app import create_app

app = create_app()
