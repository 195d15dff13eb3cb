"""Boot: pick the firmware (bootsel, with rollback), then run the node from it.

The device's root is the current folder ("/" on a board; a test folder on the unix port)."""

import os
import sys

import bootsel

_root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd().rstrip("/")
sys.path.insert(0, bootsel.select(_root))

from cenode import node  # noqa: E402  (the app folder is on the path only now)

node.main(_root)
