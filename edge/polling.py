"""The poll schedule, written once for every polled source (Modbus, CoAP GET).

A polled source gives the :class:`Poller` its devices and one coroutine that reads a device
(its *transport*: request, decode, return readings or raise); the poller does the rest, as a
Home Assistant coordinator does:

- **Schedule.** Every device has a slot every ``poll_interval_s``; the devices' first slots are
  staggered over the interval. When a read (or handing its readings on) took longer than that,
  the latest slot that passed meanwhile is polled at once, late, and the schedule goes on from
  it; the slots before it are skipped, not bunched up, and counted
  (``cityedge_poll_slots_missed``). So a device slower than its interval is polled back to
  back, as fast as it answers, without a timer per poll. The readings channel blocks when
  full, so an uplink that cannot keep up makes the pollers wait and miss slots rather than
  queueing without bound (see the ``mqtt`` sink's ``hold_backlog``).
  Each device is polled by a task of its own, so devices that answer in parallel (one
  connection each, or several requests in flight) are polled in parallel; a source whose line
  carries one request at a time serialises them in its transport.
- **Availability** is decided here (:class:`~edge.availability.Availability`): one
  "unavailable" after ``unavailable_after`` failed (or skipped) slots and one "recovered", each
  logged once, set in the ``cityedge_device_up`` gauge and sent as an ``availability``
  envelope.
- **Circuit breaker** (optional, per device): a read that raises :class:`NoAnswer` opens the
  device's breaker; its slots are then skipped — no request, no timeout spent — until a retry
  time that doubles per failed try (:class:`Breaker`). Tries of open breakers share one budget
  per poller (a bus): one try per ``probe_gap_s`` (the shortest poll interval), so however many
  units are dead, they cost the live ones at most one timeout per cycle. A device that answers
  (a poll, or a write that got an answer: :meth:`Poller.answered`) closes its breaker.
- Any other :class:`~edge.errors.DeviceError` fails the poll (counted by its code) without
  tripping the breaker: the device answered, only not with data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edge.availability import Availability, AvailabilityChange, Health
from edge.backoff import Backoff
from edge.errors import DeviceError
from edge.plugin import SourceContext
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env

log = logging.getLogger(__name__)

#: a device polled back to back (late every time) lets the loop's other tasks run this often
LATE_YIELD_EVERY = 32


class NoAnswer(DeviceError):
    """A device did not answer within its deadline: the error that opens a breaker."""


@dataclass
class Breaker:
    """Per-device circuit breaker: closed, or open until ``retry_at`` (monotonic seconds)."""

    backoff: Backoff
    open: bool = False
    retry_at: float = 0.0
    trips: int = 0

    def trip(self, now: float) -> float:
        self.open = True
        self.trips += 1
        self.retry_at = now + self.backoff.next_delay()
        return self.retry_at

    def close(self) -> None:
        self.open = False
        self.backoff.reset()


def dead_unit_breaker(initial_s: float | None, max_s: float, poll_interval_s: float) -> Breaker:
    """A breaker whose first retry waits ``initial_s`` (default: the poll interval), doubling
    up to ``max_s``, with 20 % jitter."""
    return Breaker(Backoff(min(initial_s or poll_interval_s, max_s), max_s, jitter=0.2))


@dataclass
class PolledDevice:
    """What the poller keeps of one device (a source's device record extends it).

    ``who`` names the device and where it is for log lines (``device sonde (unit 1 on
    10.0.0.5:502)``)."""

    name: str
    poll_interval_s: float
    who: str
    availability: Availability
    breaker: Breaker | None = None
    polls: int = 0  # reads tried (skips of an open breaker are not counted)
    skipped: int = 0
    missed: int = 0  # slots that passed while a poll (or its delivery) was still under way
    _metrics: tuple[Any, ...] = field(default=(), repr=False)
    _up: int = field(default=-1, repr=False)  # the device_up gauge's last value


D = TypeVar("D", bound=PolledDevice)


class Poller(Generic[D]):
    """Polls ``devices`` of source ``ctx.name`` with ``read`` (see the module docstring).

    ``read(device)`` returns the poll's readings, or raises :class:`NoAnswer` (trips the
    breaker) or another :class:`~edge.errors.DeviceError` (a failed poll)."""

    def __init__(
        self,
        ctx: SourceContext,
        devices: Sequence[D],
        read: Callable[[D], Awaitable[Sequence[Reading]]],
    ) -> None:
        self.ctx = ctx
        self.source = ctx.name
        self.devices = devices
        self._read = read
        m = ctx.metrics
        for d in devices:  # label lookups once, not per poll
            d._metrics = (
                m.polls.labels(self.source, d.name),
                m.poll_latency.labels(self.source, d.name),
                m.readings.labels(self.source, d.name),
                m.device_up.labels(self.source, d.name),
                m.poll_slots_missed.labels(self.source, d.name),
            )
        #: one try of an open breaker per this many seconds on the whole poller
        self.probe_gap_s = min((d.poll_interval_s for d in devices), default=1.0)
        self._last_probe = float("-inf")

    async def run(self, devices: Sequence[D] | None = None) -> None:
        """Poll ``devices`` (default: all) on their schedules until cancelled; the first slots
        are staggered by each device's place among all the poller's devices."""
        chosen = {id(d) for d in (self.devices if devices is None else devices)}
        n = len(self.devices)
        start = self.ctx.clock.monotonic()
        async with asyncio.TaskGroup() as tg:
            for i, dev in enumerate(self.devices):
                if id(dev) in chosen:
                    first = start + dev.poll_interval_s * i / n
                    tg.create_task(self._schedule(dev, first), name=f"poll-{dev.name}")

    async def _schedule(self, dev: D, due: float) -> None:
        clock = self.ctx.clock
        interval = dev.poll_interval_s
        late = 0
        while True:
            wait = due - clock.monotonic()
            if wait > 0:
                late = 0
                await clock.sleep(wait)
            else:
                late += 1
                if late % LATE_YIELD_EVERY == 0:  # a poll that never waits cannot hog the loop
                    await clock.sleep(0)
            await self.poll_once(dev)
            due += interval
            now = clock.monotonic()
            if due <= now:  # overran: the latest slot that passed is polled at once, late
                missed = int((now - due) / interval)  # the slots before it: skipped
                due += interval * missed
                if missed:
                    dev.missed += missed
                    dev._metrics[4].inc(missed)

    async def poll_once(self, dev: D) -> None:
        """Poll one device now (or skip it while its breaker is open)."""
        clock = self.ctx.clock
        mono = clock.monotonic()
        wall = clock.time()
        breaker = dev.breaker
        if breaker is not None and breaker.open:
            if mono < breaker.retry_at or mono - self._last_probe < self.probe_gap_s:
                dev.skipped += 1
                self.ctx.metrics.poll_errors.labels(self.source, dev.name, "circuit_open").inc()
                reason = dev.availability.last_error or "not answering"
                await self._availability(dev, dev.availability.failure(wall, reason), wall)
                return
            self._last_probe = mono
        dev.polls += 1
        polls, latency = dev._metrics[0], dev._metrics[1]
        polls.inc()
        try:
            readings = await self._read(dev)
        except NoAnswer as err:
            latency.observe(clock.monotonic() - mono)
            if breaker is not None:
                retry_at = breaker.trip(clock.monotonic())
                if breaker.trips == 1 or breaker.trips % 10 == 0:
                    log.info(
                        "%s: no reply; skipped until the next try in %.1f s",
                        dev.who,
                        retry_at - clock.monotonic(),
                    )
            await self.failed(dev, err)
            return
        except DeviceError as err:
            latency.observe(clock.monotonic() - mono)
            await self.failed(dev, err)
            return
        latency.observe(clock.monotonic() - mono)
        await self.delivered(dev, readings, wall)

    async def delivered(self, dev: D, readings: Sequence[Reading], wall: float) -> None:
        """The device answered with ``readings`` (taken at ``wall``): put them out."""
        self.answered(dev)
        change = dev.availability.success(wall)
        if change is not None or dev._up != 1:
            await self._availability(dev, change, wall)
        if readings:
            dev._metrics[2].inc(len(readings))
            batch = ReadingBatch(self.source, dev.name, wall, tuple(readings))
            if self.ctx.readings.put_now(batch) is None:
                await self.ctx.readings.put(batch)

    async def failed(self, dev: D, err: DeviceError) -> None:
        """A poll (or a notification) of ``dev`` failed with ``err``."""
        self.ctx.metrics.poll_errors.labels(self.source, dev.name, err.code).inc()
        wall = self.ctx.clock.time()
        await self._availability(dev, dev.availability.failure(wall, str(err)), wall)

    def answered(self, dev: D) -> None:
        """The device answered something (a poll, a write): its breaker closes."""
        if dev.breaker is not None:
            dev.breaker.close()

    async def _availability(self, dev: D, change: AvailabilityChange | None, now: float) -> None:
        up = 0 if dev.availability.health is Health.DOWN else 1
        if up != dev._up:
            dev._up = up
            dev._metrics[3].set(up)
        if change is None:
            return
        if change.state == "unavailable":
            log.warning(
                "%s unavailable after %d failed polls: %s",
                dev.who,
                change.failed_polls,
                change.reason,
            )
        else:
            log.info("%s recovered after %d failed polls", dev.who, change.failed_polls)
        payload = env.AvailabilityPayload(
            state=env.AvailabilityState(change.state),
            reason=change.reason,
            failed_polls=change.failed_polls,
            since=env.utc_datetime(change.since),
        )
        emitter = self.ctx.emitter
        await emitter.send(emitter.availability(dev.name, now, payload))
