"""Domain core of the recommendation service: data, models, artifacts, registry, evaluation."""

__version__ = "0.1.0"
