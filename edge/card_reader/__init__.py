"""Source ``card_reader``: cards and PINs from a Wiegand reader and keypad behind an RS-485 (or
TCP) interface, handed to the apps that follow it — never telemetry.

:mod:`.config` (pydantic only) and :mod:`.source`; the frames are decoded by
:mod:`protocols.wiegand`."""
