"""``python -m recsys``: the same CLI as the ``recsys`` command."""

from recsys.cli.main import main

main()
