"""The technician's tool: device identity, filesystem images, flashing, inventory.

Imports :mod:`protocols` and :mod:`cityedge.console` only (``provisioning`` → ``protocols``).

One exception tree (:mod:`provisioning.errors`; codes and exit codes from
:mod:`protocols.codes`)::

    ProvisionError
    ├── ProvisionInputError  CE500  the technician's input is wrong            (exit 1)
    ├── ProvisionRunError    CE510  a tool, a board or a broker failed          (exit 3)
    └── SelfTestFailed       CE520  all was written but the node never reported (exit 4)
"""
