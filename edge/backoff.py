"""Capped, jittered exponential backoff: lives in :mod:`cloud_bridge.backoff` (the link uses it
too, and ``cloud_bridge`` may not import ``edge``); re-exported here for the gateway's parts."""

from cloud_bridge.backoff import Backoff

__all__ = ["Backoff"]
