"""Exceptions raised by the pure codecs (tree drawn in :mod:`protocols`)."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Data that breaks a rule of one of our contracts."""


class DecodeError(ProtocolError):
    """Input that cannot be decoded as asked (wrong length, impossible value)."""


class EncodeError(ProtocolError):
    """A value that cannot be encoded as asked (out of range, not finite for an integer)."""


class TopicError(ProtocolError):
    """A topic, or an identifier meant for a topic, that is not in the topic tree."""
