"""The gateway's exception tree (drawn in :mod:`edge`).

Every error carries a stable ``code`` (shown to technicians and in logs; one meaning per code,
registered in :mod:`protocols.codes` with its exit code) and a ``hint`` they can act on.
Transient errors are retried by the supervisor with backoff; permanent ones stop the plug-in
until the configuration changes.
"""

from __future__ import annotations

from protocols.codes import ExitCode
from protocols.errors import HintedError

__all__ = [
    "ConfigError",
    "DeviceError",
    "EdgeError",
    "ExitCode",
    "MissingExtraError",
    "PermanentError",
    "TransientError",
]


class EdgeError(HintedError):
    """An error the gateway raises on purpose."""

    code = "CE000"


class ConfigError(EdgeError):
    """The site configuration is wrong. ``problems`` holds one line per problem."""

    code = "CE100"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def as_json(self) -> dict[str, object]:
        return {**super().as_json(), "problems": self.problems}


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
