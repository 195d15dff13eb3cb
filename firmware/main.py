"""Boot: bootsel picks the firmware (with rollback) and runs the node from it."""

import bootsel

bootsel.boot()
