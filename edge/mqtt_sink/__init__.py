"""Sink ``mqtt``: every envelope through the durable outbox to the city brain's broker.

:mod:`.config` and :mod:`.sink` (the gateway's end of :mod:`cloud_bridge.uplink`)."""
