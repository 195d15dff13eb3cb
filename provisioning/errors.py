"""The technician tool's errors: a stable code and a hint a technician can act on.

::

    ProvisionError
    ├── ProvisionInputError  CE400  the technician's input is wrong           (exit 1)
    ├── ProvisionRunError    CE410  a tool, a board or a broker failed         (exit 3)
    └── SelfTestFailed       CE420  all was written but the node never reported (exit 4)

(``provisioning`` imports only ``protocols``; the CLI maps these to ``edge.errors.ExitCode``.)
"""

from __future__ import annotations

from protocols.errors import HintedError


class ProvisionError(HintedError):
    code = "CE400"


class ProvisionInputError(ProvisionError):
    code = "CE400"


class ProvisionRunError(ProvisionError):
    code = "CE410"


class SelfTestFailed(ProvisionError):
    code = "CE420"
