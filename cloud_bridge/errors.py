"""The roots of :mod:`cloud_bridge`'s exception tree (drawn in :mod:`cloud_bridge`); shared by
both halves, so each error names whether trying again can help.

Plain exceptions, not :class:`~protocols.errors.HintedError`: they are caught where they happen
(the bridge, the ingest, the sink) or turned into a coded error by a command
(:mod:`cloud_bridge.citybrain.cli`: ``CE600`` for the store, ``CE610`` for the broker).
"""

from __future__ import annotations


class BridgeError(Exception):
    """Every error :mod:`cloud_bridge` raises on purpose."""


class TransientBridgeError(BridgeError):
    """May clear by itself: the caller keeps what it holds and tries again with backoff (or, for
    the gateway's mqtt sink, fails and is started again by the supervisor)."""


class PermanentBridgeError(BridgeError):
    """The same again fails again (a command refused for what it asks)."""
