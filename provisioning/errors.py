"""The technician tool's errors: a stable code and a hint a technician can act on.

::

    ProvisionError
    ├── ProvisionInputError  CE400  the technician's input is wrong           (exit 1)
    ├── ProvisionRunError    CE410  a tool, a board or a broker failed         (exit 3)
    └── SelfTestFailed       CE420  all was written but the node never reported (exit 4)

(``provisioning`` imports only ``protocols``; the CLI maps these to ``edge.errors.ExitCode``.)
"""

from __future__ import annotations


class ProvisionError(Exception):
    code = "CE400"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def for_humans(self) -> str:
        text = f"{self.code}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ProvisionInputError(ProvisionError):
    code = "CE400"


class ProvisionRunError(ProvisionError):
    code = "CE410"


class SelfTestFailed(ProvisionError):
    code = "CE420"
