"""The model registry: versions on disk, their manifests, stages and plan, and its records."""
