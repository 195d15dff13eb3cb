"""The technician tool's errors: a stable code and a hint a technician can act on.

::

    ProvisionError
    ├── ProvisionInputError  CE500  the technician's input is wrong            (exit 1)
    ├── ProvisionRunError    CE510  a tool, a board or a broker failed          (exit 3)
    ├── SelfTestFailed       CE520  all was written but the node never reported (exit 4)
    └── UpdateNotKept        CE530  a node refused an update or rolled it back    (exit 4)

(The codes and their exit codes are registered in :mod:`protocols.codes`, shared by every
command; ``provisioning`` imports only ``protocols``.)
"""

from __future__ import annotations

from protocols.errors import HintedError


class ProvisionError(HintedError):
    code = "CE500"


class ProvisionInputError(ProvisionError):
    code = "CE500"


class ProvisionRunError(ProvisionError):
    code = "CE510"


class SelfTestFailed(ProvisionError):
    code = "CE520"


class UpdateNotKept(ProvisionError):
    code = "CE530"
