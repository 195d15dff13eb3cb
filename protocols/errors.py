"""Exceptions raised by the pure codecs (tree drawn in :mod:`protocols`)."""

from __future__ import annotations

import errno

from protocols import codes


class HintedError(Exception):
    """An error for people: a stable ``code`` (in logs and CLI output, registered in
    :mod:`protocols.codes`) and a ``hint`` they can act on. The gateway's
    (``edge.errors.EdgeError``) and the technician tool's (``provisioning.errors.ProvisionError``)
    trees both grow from it; a command may raise it directly with a ``code``."""

    code = "CE000"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    @property
    def exit_code(self) -> int:
        """The exit code every command uses for this error's code."""
        return int(codes.lookup(self.code).exit)

    def for_humans(self) -> str:
        """``CEnnn: message`` plus the hint (the code's default when none) on its own line."""
        return codes.for_humans(self.code, self.message, self.hint)

    def as_json(self) -> dict[str, object]:
        return codes.as_json(self.code, self.message, self.hint)


def port_error(
    host: str, port: int, what: str, err: OSError, *, udp: bool = False, option: str = "--port"
) -> HintedError:
    """``CE003`` for a port that cannot be listened on: which port, what it is for, what to do
    (never the library's own words or an address tuple)."""
    proto = "UDP" if udp else "TCP"
    hint: str | None
    if err.errno == errno.EADDRINUSE:
        problem = "is in use"
        hint = (
            f"stop what listens there ('ss -ltnup sport = :{port}' names it) or choose another "
            f"port with {option}"
        )
    elif err.errno == errno.EACCES:
        problem = "is not allowed for this user"
        hint = f"ports below 1024 need privileges: choose another port with {option}"
    elif (
        err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or err.errno is None or err.errno < 0
    ):
        problem = f"cannot be used: {host} is not an address of this machine"
        hint = "listen on 127.0.0.1, 0.0.0.0 or an address that 'ip addr' shows"
    else:
        problem = f"cannot be listened on: {(err.strerror or str(err)).lower()}"
        hint = None
    return HintedError(
        f"{proto} port {port} on {host} ({what}) {problem}", hint=hint, code=codes.PORT_IN_USE
    )


class ProtocolError(ValueError):
    """Data that breaks a rule of one of our contracts."""


class DecodeError(ProtocolError):
    """Input that cannot be decoded as asked (wrong length, impossible value)."""


class EncodeError(ProtocolError):
    """A value that cannot be encoded as asked (out of range, not finite for an integer)."""


class TopicError(ProtocolError):
    """A topic, or an identifier meant for a topic, that is not in the topic tree."""
