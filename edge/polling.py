"""What every polling source does the same way: report availability changes once, in the log,
in the ``cityedge_device_up`` gauge and as an ``availability`` envelope."""

from __future__ import annotations

import logging

from edge.availability import Availability, AvailabilityChange, Health
from edge.plugin import SourceContext
from protocols import envelope as env

log = logging.getLogger(__name__)


async def report_availability(
    ctx: SourceContext,
    source: str,
    device: str,
    who: str,
    availability: Availability,
    change: AvailabilityChange | None,
    now: float,
) -> None:
    """Set the device's up gauge; log and emit ``change`` if there is one (``who`` names the
    device and where it is, for the log line)."""
    ctx.metrics.device_up.labels(source, device).set(0 if availability.health is Health.DOWN else 1)
    if change is None:
        return
    if change.state == "unavailable":
        log.warning(
            "%s unavailable after %d failed polls: %s", who, change.failed_polls, change.reason
        )
    else:
        log.info("%s recovered after %d failed polls", who, change.failed_polls)
    payload = env.AvailabilityPayload(
        state=env.AvailabilityState(change.state),
        reason=change.reason,
        failed_polls=change.failed_polls,
        since=env.utc_datetime(change.since),
    )
    await ctx.emitter.send(ctx.emitter.availability(device, now, payload))
