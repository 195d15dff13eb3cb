"""The bridge on a bad day, against the real mosquitto: a task of it that crashes is not passed
over in silence, and a full disk holds envelopes back instead of losing them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_bridge.link import LinkSettings, MqttLink
from cloud_bridge.uplink.bridge import Bridge
from cloud_bridge.uplink.commands import RefusalLog
from cloud_bridge.uplink.outbox import Outbox, OutboxSettings, record_of
from protocols import envelope as env
from protocols import topics
from protocols.commands import CommandReply
from protocols.session import HostState, LinkState
from sim.localsite import Broker
from tests.cloud_bridge.uplink.test_bridge import availability, drain, settings
from tests.cloud_bridge.uplink.test_outbox_faults import fill_disk


class CrashingDesk:
    """Stands in for the bridge's CommandDesk (same ``handle``): fails on every message, as the
    real one did on ``[`` nested 100000 deep before it checked depth."""

    refusal_log = RefusalLog(time.monotonic)

    async def handle(self, data: bytes) -> CommandReply:
        raise RecursionError("maximum recursion depth exceeded while decoding a command")


async def until(check: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def publish(port: int, topic: str, payload: bytes) -> None:
    async with MqttLink.open(LinkSettings("127.0.0.1", port, client_id="tester")) as link:
        await link.publish(topic, payload, qos=1)


async def test_a_crash_in_the_listener_ends_the_bridge_with_it_and_keeps_what_was_accepted(
    mosquitto: Broker, tmp_path: Path
) -> None:
    s = dataclasses.replace(settings(mosquitto.port, tmp_path / "o.db"), wait_for_ingest="nobody")
    async with Bridge.open(s) as bridge:
        bridge.commands = CrashingDesk()  # type: ignore[assignment]
        run = asyncio.create_task(bridge.run())
        await asyncio.wait_for(bridge.connected.wait(), 10)
        for i in range(5):
            await bridge.put(record_of(availability(i)))
        await publish(mosquitto.port, topics.command_request_topic("s", "g"), b"{}")
        await asyncio.wait({run}, timeout=10)
        assert run.done(), "run() went on"  # before: the listener died unseen, run() went on
        with pytest.raises(ExceptionGroup) as crash:
            await run
        [err] = crash.value.exceptions
        assert isinstance(err, RecursionError)
        assert any("listener" in note for note in err.__notes__)
        assert bridge.outbox.depth + len(bridge.leftover()) == 5  # stored, or handed on


def free_disk(ob: Outbox) -> None:
    ob._db.execute("PRAGMA max_page_count=4294967294")
    ob.settings.disk_probe_s = 0  # look at the (real, roomy) disk at the next commit


def heartbeat(group: str) -> bytes:
    return (
        HostState(
            state=LinkState.ONLINE, group=group, worker="w1", time=datetime.now(UTC), interval_s=5
        )
        .model_dump_json()
        .encode()
    )


async def test_on_a_full_disk_with_nothing_to_drop_envelopes_wait_and_go_out_after(
    mosquitto: Broker, tmp_path: Path
) -> None:
    s = dataclasses.replace(
        settings(mosquitto.port, tmp_path / "o.db"),
        wait_for_ingest="brain",  # nothing is sent (or deleted) until a heartbeat comes
        max_pending=50,
        outbox=OutboxSettings(reserve_bytes=4096, disk_probe_s=3600),
    )
    async with (
        MqttLink.open(LinkSettings("127.0.0.1", mosquitto.port, client_id="sub")) as sub,
        Bridge.open(s) as bridge,
    ):
        await sub.subscribe("cityedge/v1/s/g/availability/#")
        run = asyncio.create_task(bridge.run())
        for i in range(200):
            await bridge.put(record_of(availability(i)))
        await until(lambda: bridge.outbox.depth == 200, "stored")
        await bridge._db(fill_disk, bridge.outbox)

        async def more() -> None:
            for i in range(200, 260):
                await bridge.put(record_of(availability(i)))

        putter = asyncio.create_task(more())
        await until(lambda: bridge.holding is not None, "holding back")
        [reason] = bridge.health()
        assert "outbox disk full" in reason and "holding" in reason
        assert bridge.outbox.depth == 200 and bridge.outbox.dropped == dict.fromkeys(
            bridge.outbox.dropped, 0
        )
        assert not putter.done()  # back pressure: put() waits, nothing is dropped

        await bridge._db(free_disk, bridge.outbox)
        await asyncio.wait_for(putter, 10)
        await publish(mosquitto.port, topics.host_state_topic("brain", "w1"), heartbeat("brain"))
        bridge.close_intake()
        await asyncio.wait_for(run, 20)
        assert bridge.health() == []
        got = [env.decode(p) for _, p in await drain(sub)]
    assert sorted(e.link.pos for e in got if e.link) == list(range(1, 261))  # every one, once
    ids = [e.id for e in got]
    assert ids == sorted(ids)  # in the order they were accepted
