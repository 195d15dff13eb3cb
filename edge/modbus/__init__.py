"""Source ``modbus``: Modbus TCP or RTU devices on one bus, polled on an interval.

:mod:`.config` (importable without the ``modbus`` extra) and :mod:`.source`."""
