"""The self-test: after provisioning, wait until the site broker has the new ACL and the node
reports, with a deadline for both together.

1. The ACL: the tool publishes to the ACL's probe topic until the broker answers anything but
   "not authorized" (:mod:`provisioning.site` explains the probe). If the tool does not manage
   the broker, the progress says how to reload it; mosquitto reloads its ACL on SIGHUP.
2. The report: the first frame on the node's ``status`` or ``up`` topic that is not retained
   (a retained one may be from before this provisioning). A frame there is authenticated: the
   broker's ACL lets only the node's certificate write those topics.

The verdict and what the frame says (firmware version, state, when) go into the inventory. The
default deadline (:func:`default_wait_s`) is twice the node's report interval plus 30 s for a
boot and Wi-Fi, so a node that booted just before the tool subscribed still has a report due.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from provisioning.errors import SelfTestFailed
from provisioning.observe import learn
from provisioning.progress import Progress, quiet
from provisioning.site import Site, acl_probe_topic
from provisioning.sitebroker import Clock, Heard, Session, open_session

BOOT_S = 30.0  # a board's boot, Wi-Fi and TLS handshake


def default_wait_s(report_interval_s: float | None) -> float:
    return 2 * (report_interval_s or 60) + BOOT_S


def wait_for_acl(
    session: Session,
    site: Site,
    until: float,
    started: float,
    total_s: float,
    progress: Progress,
    how_to_reload: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    generation = site.acl_generation()
    probe = acl_probe_topic(site.site, generation)
    while not session.acl_taken(probe, timeout_s=max(1.0, until - session.clock())):
        now = session.clock()
        if now >= until:
            raise SelfTestFailed(
                f"the site broker has not taken the new ACL (generation {generation}) within "
                f"{total_s:.0f} s",
                hint=f"{how_to_reload}; mosquitto reads its ACL again on SIGHUP",
            )
        progress(
            "self-test",
            (now - started) / total_s,
            f"waiting for the broker to take ACL {generation}: {how_to_reload}",
        )
        sleep(min(0.5, max(0.0, until - now)))


def run(
    site: Site,
    node: str,
    *,
    timeout_s: float,
    how_to_reload: str = "reload the site broker",
    progress: Progress = quiet,
    clock: Clock = time.monotonic,
    session: Session | None = None,
) -> Heard:
    """Wait for the broker's ACL, then for the node's first report; record the verdict."""
    started = clock()
    until = started + timeout_s
    progress("self-test", 0.0, "connecting to the site broker")
    own = session is None
    s = session or open_session(site, "selftest", clock)
    try:
        wait_for_acl(s, site, until, started, timeout_s, progress, how_to_reload)
        s.watch(site.site, [node], ("status", "up"), timeout_s=max(1.0, until - clock()))
        inv = site.inventory()
        dev = inv.by_name(node)
        inv.close()
        every = (
            f" (it reports every {dev.report_interval_s:g} s)"
            if dev and dev.report_interval_s
            else ""
        )
        while True:
            now = clock()
            progress(
                "self-test",
                (now - started) / timeout_s,
                f"waiting for {node}'s first report{every}",
            )
            heard = s.next(min(until, now + 0.5))
            if heard is not None and not heard.retained and heard.node == node:
                _record(site, node, heard, ok=True)
                progress("self-test", 1.0, f"{node} reported")
                return heard
            if heard is None and clock() >= until:
                break
    finally:
        if own:
            s.close()
    _record(site, node, None, ok=False)
    why = f" (undecodable frames: {s.undecodable[-1]})" if s.undecodable else ""
    raise SelfTestFailed(
        f"node {node} sent nothing within {timeout_s:.0f} s{why}",
        hint="check the node's power and Wi-Fi, its serial console for errors, and that the "
        "broker was reloaded after provisioning (new ACL)",
    )


def _record(site: Site, node: str, heard: Heard | None, *, ok: bool) -> None:
    inv = site.inventory()
    try:
        if heard is not None:
            learn(inv, heard)
        inv.self_tested(node, ok)
    finally:
        inv.close()
