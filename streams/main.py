"""The faust application ``faust -A streams.main worker`` loads (settings from the environment)."""

from streams.app import create_app

app = create_app()
