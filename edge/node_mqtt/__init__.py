"""Source ``mqtt``: MicroPython sensor nodes on the site's local broker (the node wire format).

:mod:`.config` and :mod:`.source`."""
