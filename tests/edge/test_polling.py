"""The one poll schedule (edge.polling) with a fake transport on a virtual clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from edge.availability import Availability
from edge.clock import VirtualClock
from edge.errors import DeviceError
from edge.polling import NoAnswer, PolledDevice, Poller, dead_unit_breaker
from edge.readings import Reading
from protocols import envelope as env
from tests.edge.source_harness import Captured, source_context


@dataclass
class FakeBus:
    """One request at a time (as an RTU line): a live unit answers after ``answer_s``; a dead
    one costs ``timeout_s``; ``refusing`` units answer with an exception at once."""

    clock: VirtualClock
    dead: set[str] = field(default_factory=set)
    refusing: set[str] = field(default_factory=set)
    answer_s: float = 0.01
    timeout_s: float = 0.5
    calls: list[tuple[float, str]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read(self, dev: PolledDevice) -> list[Reading]:
        async with self.lock:
            self.calls.append((self.clock.monotonic(), dev.name))
            if dev.name in self.dead:
                await self.clock.sleep(self.timeout_s)
                raise NoAnswer(f"no reply from {dev.name}")
            await self.clock.sleep(self.answer_s)
            if dev.name in self.refusing:
                raise DeviceError(f"{dev.name} answered with exception 2")
            return [Reading("x", 1)]

    def times(self, name: str) -> list[float]:
        return [t for t, n in self.calls if n == name]


def devices(names: list[str], interval: float, breaker: bool = True) -> list[PolledDevice]:
    return [
        PolledDevice(
            name=n,
            poll_interval_s=interval,
            who=f"device {n}",
            availability=Availability(2, 0.0),
            breaker=dead_unit_breaker(None, 8.0, interval) if breaker else None,
        )
        for n in names
    ]


@contextlib.asynccontextmanager
async def running(
    devs: list[PolledDevice], read: Callable[[PolledDevice], object], clock: VirtualClock
) -> AsyncIterator[tuple[Poller[PolledDevice], Captured]]:
    cap = source_context("bus", clock=clock, capacity=10_000)
    poller: Poller[PolledDevice] = Poller(cap.ctx, devs, read)  # type: ignore[arg-type]
    task = asyncio.create_task(poller.run())
    try:
        yield poller, cap
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_first_slots_are_staggered_then_every_interval() -> None:
    clock = VirtualClock()
    bus = FakeBus(clock)
    t0 = clock.monotonic()
    async with running(devices(["a", "b", "c", "d"], 1.0), bus.read, clock):
        await clock.advance(3.1)
    for i, name in enumerate("abcd"):
        assert [round(t - t0, 3) for t in bus.times(name)] == [
            round(i * 0.25 + k, 3) for k in range(4) if i * 0.25 + k <= 3.1
        ]


def metric(cap: Captured, name: str, **labels: str) -> float | None:
    return cap.metrics.registry.get_sample_value(name, labels)


async def test_a_slot_missed_while_busy_is_skipped_not_bunched() -> None:
    clock = VirtualClock()
    bus = FakeBus(clock, answer_s=2.5)  # each read takes two and a half intervals
    t0 = clock.monotonic()
    devs = devices(["a"], 1.0)
    async with running(devs, bus.read, clock) as (_poller, cap):
        await clock.advance(9.0)
    # the read at 0 ends at 2.5: slot 2 is read at once (late), slot 1 skipped; that read ends
    # at 5.0, when slot 5 is due (3 and 4 skipped); the next ends at 7.5: slot 7 at once, 6
    # skipped; back to back, as fast as the device answers, never two for one slot
    assert [round(t - t0, 3) for t in bus.times("a")] == [0.0, 2.5, 5.0, 7.5]
    assert devs[0].missed == 4  # 1, 3, 4, 6
    assert metric(cap, "cityedge_poll_slots_missed_total", source="bus", device="a") == 4


async def test_a_read_a_little_slower_than_its_interval_misses_no_slot() -> None:
    clock = VirtualClock()
    bus = FakeBus(clock, answer_s=1.2)
    t0 = clock.monotonic()
    devs = devices(["a"], 1.0)
    async with running(devs, bus.read, clock):
        await clock.advance(5.0)
    # each slot's read starts when the last ends, 0.2 s later than the one before: none skipped
    assert [round(t - t0, 3) for t in bus.times("a")] == [0.0, 1.2, 2.4, 3.6, 4.8]
    assert devs[0].missed == 0


@pytest.mark.timeout(20)  # without the yields the loop never comes back: the test hangs
async def test_a_poll_that_never_waits_still_lets_the_loop_run() -> None:
    """A device polled back to back whose poll does not wait for anything (a skipped slot of
    an open breaker, say) must not hog the loop: the schedule yields now and then."""
    clock = VirtualClock()
    devs = devices(["a"], 1.0)
    cap = source_context("bus", clock=clock)
    polls = 0

    async def read(dev: PolledDevice) -> list[Reading]:
        nonlocal polls
        polls += 1
        clock._now += 2.0  # takes two intervals without giving the loop a turn
        return []

    poller: Poller[PolledDevice] = Poller(cap.ctx, devs, read)
    task = asyncio.create_task(poller.run())
    try:
        for _ in range(3):
            await asyncio.sleep(0)  # the test's own task gets turns
        assert polls > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_full_readings_channel_makes_the_pollers_wait_and_miss_slots_counted() -> None:
    """Back pressure: nobody takes the readings (an uplink that cannot keep up holds the sink,
    the sink's channel, the dispatcher): the poller waits on the full channel instead of
    reading on, and the slots that pass are counted, not queued."""
    clock = VirtualClock()
    bus = FakeBus(clock)
    devs = devices(["a"], 1.0)
    t0 = clock.monotonic()
    cap = source_context("bus", clock=clock, capacity=2)
    poller: Poller[PolledDevice] = Poller(cap.ctx, devs, bus.read)
    task = asyncio.create_task(poller.run())
    try:
        await clock.advance(10.0)
        assert len(bus.times("a")) == 3  # two fill the channel, the third waits to be put
        assert cap.readings.depth == 2
        for _ in range(2):  # taken: the waiting one goes in and polling resumes
            await cap.readings.get()
        await clock.advance(1.0)
        # after the wait the latest slot at once, then the next: not the eight that passed
        assert [round(t - t0) for t in bus.times("a")] == [0, 1, 2, 10, 11]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert devs[0].missed == 7  # 3 to 9
    assert metric(cap, "cityedge_poll_slots_missed_total", source="bus", device="a") == (
        devs[0].missed
    )


async def test_availability_changes_once_each_way_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    bus = FakeBus(clock, refusing={"a"})
    caplog.set_level(logging.INFO, logger="edge.polling")
    async with running(devices(["a"], 1.0), bus.read, clock) as (poller, cap):
        await clock.advance(5.5)
        bus.refusing.clear()
        await clock.advance(3.0)
    states = [e.payload.state for e in cap.availability()]
    assert states == [env.AvailabilityState.UNAVAILABLE, env.AvailabilityState.RECOVERED]
    assert "exception 2" in cap.availability()[0].payload.reason
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unavailable after" in m for m in lines) == 1
    assert sum("recovered after" in m for m in lines) == 1
    # the device answered with an exception: its breaker never opened
    assert poller.devices[0].breaker is not None and poller.devices[0].breaker.trips == 0
    assert len(cap.batches()) == 3
    metrics = cap.metrics
    assert metrics.device_up.labels("bus", "a")._value.get() == 1


async def test_dead_units_cost_live_ones_at_most_one_timeout_per_cycle() -> None:
    clock = VirtualClock()
    dead = {"d1", "d2", "d3"}
    bus = FakeBus(clock, dead=set(dead), timeout_s=0.5)
    devs = devices(["live", "d1", "d2", "d3"], 1.0)
    async with running(devs, bus.read, clock) as (_poller, cap):
        await clock.advance(30.0)
    live = bus.times("live")
    assert len(live) >= 28
    # the first cycle finds out each dead unit with one timeout; from then on a live unit's
    # period grows by one timeout at most, never two
    periods = [b - a for a, b in itertools.pairwise(live) if a > live[0] + 2]
    assert max(periods) <= 1.0 + 0.5 + 1e-9
    # after each dead unit was found out once, tries of all three together stay within one
    # per poll interval (the bus's budget), and each unit's own waits double (1, 2, 4, 8 s
    # less jitter), so in 30 s a dead unit is tried a handful of times, not 30
    tries = sorted(t for t, n in bus.calls if n in dead)
    later = [t for t in tries if t > tries[2]]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(later))
    for name in dead:
        assert len(bus.times(name)) <= 8, bus.times(name)
    (event,) = [e for e in cap.availability() if e.device == "d1"]
    assert event.payload.state is env.AvailabilityState.UNAVAILABLE
    assert not [e for e in cap.availability() if e.device == "live"]


async def test_without_a_breaker_every_slot_of_a_silent_device_is_tried() -> None:
    clock = VirtualClock()
    bus = FakeBus(clock, dead={"a"}, timeout_s=0.2)
    async with running(devices(["a"], 1.0, breaker=False), bus.read, clock) as (_p, cap):
        await clock.advance(4.5)
    assert len(bus.times("a")) == 5
    assert [e.payload.state for e in cap.availability()] == [env.AvailabilityState.UNAVAILABLE]


async def test_an_answer_to_a_write_closes_the_breaker() -> None:
    clock = VirtualClock()
    bus = FakeBus(clock, dead={"a"})
    async with running(devices(["a"], 1.0), bus.read, clock) as (poller, _cap):
        await clock.advance(0.6)
        breaker = poller.devices[0].breaker
        assert breaker is not None and breaker.open
        poller.answered(poller.devices[0])
        assert not breaker.open
