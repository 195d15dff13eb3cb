"""How the inventory learns from the nodes themselves: firmware version, state and last seen.

Nodes publish a status frame (retained, so the broker keeps the latest) when they boot, become
healthy, install, refuse or roll back an update; the broker publishes their will (``offline``,
retained) when they vanish; readings frames come every report interval. The tool reads them on
the site broker with the technician's certificate:

- ``provision list --refresh`` subscribes to every node's ``status`` and ``up`` for a short
  window (:data:`REFRESH_S`: retained statuses arrive at once, readings as they come);
- the self-test and ``provision ota`` record what they hear while they wait.

Last seen is the frame's own time when the node's clock is set (NTP; the frame says 0
otherwise), else when a live frame arrived; a retained frame from a node without a clock, and
the will (built when the node connected, not when it left), say nothing about when.
"""

from __future__ import annotations

import datetime as dt
import time

from protocols import nodewire
from provisioning.inventory import Inventory
from provisioning.progress import Progress, quiet
from provisioning.site import Site
from provisioning.sitebroker import Clock, Heard, open_session

REFRESH_S = 3.0


def frame_time(heard: Heard) -> dt.datetime | None:
    if heard.frame.time > 0:
        return dt.datetime.fromtimestamp(heard.frame.time, dt.UTC)
    return None if heard.retained else dt.datetime.now(dt.UTC)


def learn(inv: Inventory, heard: Heard) -> bool:
    """What a frame tells the inventory; False when it is from no known node."""
    f = heard.frame
    if isinstance(f, nodewire.StatusFrame):
        state = f.state.name.lower().replace("_", "-")
        at = None if f.state is nodewire.NodeState.OFFLINE else frame_time(heard)
        return inv.seen(heard.node, at=at, version=".".join(map(str, f.version)), state=state)
    return inv.seen(heard.node, at=frame_time(heard))


def refresh(
    site: Site,
    window_s: float = REFRESH_S,
    progress: Progress = quiet,
    clock: Clock = time.monotonic,
) -> set[str]:
    """Listen to the site's nodes for ``window_s``; returns the nodes heard from."""
    heard_from: set[str] = set()
    with open_session(site, "refresh", clock) as s:
        s.watch(site.site, None, ("status", "up"))
        started = clock()
        until = started + window_s
        inv = site.inventory()
        try:
            while (h := s.next(until)) is not None or clock() < until:
                progress("refresh", (clock() - started) / window_s, "reading the nodes' status")
                if h is not None and learn(inv, h):
                    heard_from.add(h.node)
        finally:
            inv.close()
    return heard_from
