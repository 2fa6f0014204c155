"""The ``recsys`` command line: core commands here, process commands from entry points."""
