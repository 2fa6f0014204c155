"""Experiment reports and the dashboard page: history from the audit log, SVG charts, HTML."""
