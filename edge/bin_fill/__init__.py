"""App ``bin_fill``: how full each bin is, from a camera above it and/or a level sensor.

:mod:`.config`, :mod:`.app` and the per-bin state machine in :mod:`.state`."""
