"""How long work reports how far it is: ``progress(step, fraction, detail)``.

``step`` names the stage (``copy``, ``self-test``, ``bin-17 send``), ``fraction`` is the share
of it done (0..1; for a wait, the share of its deadline used), ``detail`` says what it waits for
in words a technician acts on ("waiting for the broker to take ACL 3f2a…: reload it ..."). The
command line draws it (:func:`provisioning.cli._steps`); library callers may pass nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, step: str, fraction: float, detail: str = "") -> None: ...


def quiet(step: str, fraction: float, detail: str = "") -> None:
    """A :class:`Progress` that shows nothing."""
