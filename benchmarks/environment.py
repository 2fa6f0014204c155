"""The environment benchmarks give the processes they start."""

from __future__ import annotations

import os


def cli_env() -> dict[str, str]:
    """This process's environment without its ``RECSYS_*`` settings, for the ``recsys`` CLI.

    A benchmark sets what its processes need; a setting left in the caller's shell would
    otherwise change what is measured.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
