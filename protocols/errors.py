"""Exceptions raised by the pure codecs (tree drawn in :mod:`protocols`)."""

from __future__ import annotations


class HintedError(Exception):
    """An error for people: a stable ``code`` (in logs and CLI output) and a ``hint`` they can
    act on. The gateway's (``edge.errors.EdgeError``) and the technician tool's
    (``provisioning.errors.ProvisionError``) trees both grow from it."""

    code = "CE000"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def for_humans(self) -> str:
        """``CE123: message`` plus the hint on its own line."""
        text = f"{self.code}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ProtocolError(ValueError):
    """Data that breaks a rule of one of our contracts."""


class DecodeError(ProtocolError):
    """Input that cannot be decoded as asked (wrong length, impossible value)."""


class EncodeError(ProtocolError):
    """A value that cannot be encoded as asked (out of range, not finite for an integer)."""


class TopicError(ProtocolError):
    """A topic, or an identifier meant for a topic, that is not in the topic tree."""
