"""Back pressure against the real mosquitto: while the bridge is sending, an intake faster than
the broker is held once the backlog has grown ``hold_backlog`` above its lowest; while the link
is down nothing is held (the outbox takes the outage); and everything offered arrives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from cloud_bridge.link import LinkSettings, MqttLink
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.outbox import Record, record_of
from sim.localsite import Broker, free_port
from tests.cloud_bridge.uplink.test_bridge import settings, telemetry

HOLD = 500
# no stall in these tests unless they make one: a loaded machine may leave the broker silent
# for a second or two, and a stall lets the intake go on (see hold_stall_s)
PATIENT_S = 60.0
BATCH = 64  # the sink hands the bridge batches; one may land past the mark before the check


def records(n: int, start: int = 0) -> list[Record]:
    return [record_of(telemetry(start + i)) for i in range(n)]


async def offer(bridge: Bridge, total: int, peaks: list[int]) -> None:
    """Put ``total`` records as fast as the bridge takes them, noting the backlog after each."""
    for start in range(0, total, BATCH):
        await bridge.put_many(records(min(BATCH, total - start), start))
        peaks.append(bridge.backlog)


async def count_arrivals(sub: MqttLink, want: int, timeout_s: float = 60) -> int:
    got = 0
    async with asyncio.timeout(timeout_s):
        while got < want:
            msg = await sub.receive()
            if "/telemetry/" in msg.topic:
                got += 1
    return got


@contextlib.asynccontextmanager
async def sending(port: int, s: BridgeSettings) -> AsyncIterator[tuple[MqttLink, Bridge]]:
    """A subscriber to everything, and a bridge connected and sending; its intake is closed
    and its run awaited (everything delivered) on the way out."""
    async with MqttLink.open(LinkSettings("127.0.0.1", port, client_id="sub")) as sub:
        await sub.subscribe("cityedge/v1/#")
        async with Bridge.open(s) as bridge:
            run = asyncio.create_task(bridge.run())
            async with asyncio.timeout(10):
                await bridge.connected.wait()
            yield sub, bridge
            bridge.close_intake()
            async with asyncio.timeout(30):
                await run


async def test_an_intake_faster_than_the_broker_is_held_and_nothing_is_lost(
    mosquitto: Broker, tmp_path: Path
) -> None:
    total = 20_000
    s = dataclasses.replace(
        settings(mosquitto.port, tmp_path / "o.db"), hold_backlog=HOLD, hold_stall_s=PATIENT_S
    )
    async with sending(mosquitto.port, s) as (sub, bridge):
        peaks: list[int] = []
        arrivals = asyncio.create_task(count_arrivals(sub, total))
        await offer(bridge, total, peaks)
        assert await arrivals == total
        assert bridge.counters.held > 0, "an intake in memory outruns any broker"
        # held at the mark: the backlog never ran far past it (the floor is 0: it started
        # empty, with the link up)
        assert max(peaks) <= HOLD + BATCH, max(peaks)
        assert bridge.counters.held_s > 0
    assert not bridge.holding_intake and bridge.health() == []


async def test_nothing_is_held_while_the_link_is_down(tmp_path: Path) -> None:
    """An outage is what the outbox is for: the sources go on, all of it is stored."""
    total = 5_000
    s = dataclasses.replace(settings(free_port(), tmp_path / "o.db"), hold_backlog=HOLD)
    async with Bridge.open(s) as bridge:
        run = asyncio.create_task(bridge.run())
        peaks: list[int] = []
        async with asyncio.timeout(30):
            await offer(bridge, total, peaks)
        assert bridge.counters.held == 0
        assert max(peaks) == total  # all taken, far past the mark
        async with asyncio.timeout(30):  # and all of it stored
            while bridge.outbox.depth < total:  # noqa: ASYNC110 - a figure of another thread
                await asyncio.sleep(0.05)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_after_an_outage_the_backlog_drains_and_new_intake_is_held_above_its_floor(
    tmp_path: Path,
) -> None:
    """The link comes back to a big backlog: that is the floor; intake goes on while the
    broker brings it down and is held only when it would grow ``hold_backlog`` above it."""
    port = free_port()
    stored = 20_000
    s = dataclasses.replace(
        settings(port, tmp_path / "o.db"), hold_backlog=HOLD, hold_stall_s=PATIENT_S
    )
    async with Bridge.open(s) as bridge:
        run = asyncio.create_task(bridge.run())
        await offer(bridge, stored, [])
        assert bridge.counters.held == 0
        broker = Broker.start(tmp_path / "broker", port=port)
        try:
            async with MqttLink.open(LinkSettings("127.0.0.1", port, client_id="sub")) as sub:
                await sub.subscribe("cityedge/v1/#")
                async with asyncio.timeout(15):
                    await bridge.connected.wait()
                arrivals = asyncio.create_task(count_arrivals(sub, stored + 10_000))
                peaks: list[int] = []
                await offer(bridge, 10_000, peaks)
                assert await arrivals == stored + 10_000
                assert max(peaks) <= stored + HOLD + BATCH, max(peaks)
                # not held down to the mark itself: the outage's backlog is drained meanwhile
                assert peaks[0] > HOLD + BATCH, peaks[:3]
            bridge.close_intake()
            async with asyncio.timeout(30):
                await run
        finally:
            broker.stop()


async def test_a_broker_that_hangs_with_the_connection_open_does_not_hold_the_sources(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """SIGSTOP: the link looks up but nothing is acknowledged. That is an outage, not a slow
    broker: after ``hold_stall_s`` without an acknowledgement the intake goes on into the
    outbox, and once the broker runs again everything arrives."""
    total = 5_000
    s = dataclasses.replace(
        settings(mosquitto.port, tmp_path / "o.db"), hold_backlog=HOLD, hold_stall_s=0.5
    )
    async with sending(mosquitto.port, s) as (sub, bridge):
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)
        try:
            peaks: list[int] = []
            async with asyncio.timeout(30):  # held at most a stall at a time
                await offer(bridge, total, peaks)
            assert bridge.connected.is_set()  # it never looked down
            assert max(peaks) >= total - 200  # all taken, past the mark
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        assert await count_arrivals(sub, total) == total
