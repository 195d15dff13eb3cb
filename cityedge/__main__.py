"""``python -m cityedge``: the ``cityedge`` command."""

from cityedge.cli import main

main()
