"""The ``cityedge`` command and what every room's commands share.

- :mod:`cityedge.cli`      the root command: it adds the commands of each room (the gateway's,
  face access, provisioning, the city brain's side, the simulators and the demo);
- :mod:`cityedge.console`  how errors reach a person, consoles, JSON output, port and serial
  probes; it imports only :mod:`protocols`, so every room's CLI may import it.

Errors: every command stops with a :class:`~protocols.errors.HintedError` (``fail()``), or
:class:`cityedge.console.Failed` (a ``HintedError`` whose ``--json`` form also says what was
done before it); the code gives the exit code, from the one registry :mod:`protocols.codes`.
Nothing here declares exit codes of its own.
"""
