"""The gateway's exception tree (drawn in :mod:`edge`).

Every error carries a stable ``code`` (shown to technicians and in logs) and a ``hint`` they can
act on. Transient errors are retried by the supervisor with backoff; permanent ones stop the
plug-in until the configuration changes.
"""

from __future__ import annotations

from enum import IntEnum

from protocols.errors import HintedError


class ExitCode(IntEnum):
    """Exit codes of every ``cityedge`` command (documented in the README)."""

    OK = 0
    INPUT = 1  # the input is wrong: config problems, an out-of-date schema, bad arguments' values
    USAGE = 2  # unknown option or missing argument (typer's own)
    RUNTIME = 3  # could not run: a missing optional package, a port in use, a peer unreachable
    VERIFY = 4  # the work was done but its check failed (a provisioned node never reported)


class EdgeError(HintedError):
    """An error the gateway raises on purpose."""

    code = "CE000"


class ConfigError(EdgeError):
    """The site configuration is wrong. ``problems`` holds one line per problem."""

    code = "CE100"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def for_humans(self) -> str:
        return "\n".join(self.problems)


class MissingExtraError(EdgeError):
    code = "CE101"


class PermanentError(EdgeError):
    """Retrying will not help."""

    code = "CE200"


class TransientError(EdgeError):
    """May go away by itself; retried with backoff."""

    code = "CE300"


class DeviceError(TransientError):
    """A field device did not answer, or answered with an exception."""

    code = "CE310"
