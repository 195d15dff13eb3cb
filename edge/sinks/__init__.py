"""Sinks deliver envelopes out of the gateway (to the city brain's broker)."""
