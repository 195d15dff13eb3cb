"""Sink ``hj212``: the uplink to an environment bureau's platform, HJ 212-2017 over TCP.

:mod:`.config` and :mod:`.sink`."""
