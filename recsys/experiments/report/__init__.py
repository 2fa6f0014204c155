"""Experiment reports and the dashboard page: history from the registry's records, SVG charts, HTML."""
