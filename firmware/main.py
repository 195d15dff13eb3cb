"""Boot: pick the firmware (bootsel, with rollback), then run the node from it.

The device's root is the current folder ("/" on a board; a test folder on the unix port)."""

import os
import sys

import bootsel

_root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd().rstrip("/")
sys.path.insert(0, bootsel.select(_root))
if bootsel.read_state(_root).get("pending"):
    # a new image on trial: if it crashes into the REPL or hangs, the watchdog resets the board,
    # and bootsel counts that boot
    import machine

    machine.WDT(timeout=60000)

from cenode import node  # noqa: E402  (the app folder is on the path only now)

node.main(_root)
