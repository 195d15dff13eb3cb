"""The reconnecting MQTT session against the real mosquitto: subscribe again after a restart,
say the outage once and the recovery once, back off on the injected clock, try the next
endpoint, stop at once, and never pass over a link whose own task died."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from cloud_bridge.link import LinkError, LinkSettings, Message, MqttLink, Will
from cloud_bridge.session import (
    Endpoint,
    MqttSession,
    SessionSettings,
    Subscription,
)
from edge.clock import VirtualClock
from sim.localsite import Broker, free_port
from tests.cloud_bridge.uplink.test_bridge_faults import until


def settings(port: int, **kw: Any) -> SessionSettings:
    kw.setdefault("subscriptions", (Subscription("t/#", qos=1),))
    kw.setdefault("reconnect_initial_s", 0.05)
    kw.setdefault("reconnect_max_s", 0.2)
    kw.setdefault("name", "test")
    link = LinkSettings("127.0.0.1", port, client_id="session", connect_timeout_s=3)
    return SessionSettings(link=link, **kw)


async def publish(port: int, topic: str, payload: bytes) -> None:
    async with MqttLink.open(LinkSettings("127.0.0.1", port, client_id="pub")) as pub:
        await pub.publish(topic, payload)


def broke_keepalive(link: MqttLink) -> None:
    """Make the link's own task (the keepalive tick, once a second) fail, as a bug in it
    would."""
    real, calls = link._tick, []

    def boom() -> bool:
        calls.append(1)
        if len(calls) == 1:  # the task's next tick
            raise RuntimeError("keepalive tick broke")
        return real()

    link._tick = boom  # type: ignore[method-assign]


async def test_a_restarted_broker_is_subscribed_again_and_the_outage_said_once(
    mosquitto: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud_bridge.session")
    got: list[bytes] = []
    async with MqttSession(settings(mosquitto.port)) as session:

        async def read() -> None:
            async for msg in session.messages():
                got.append(msg.payload)

        reader = asyncio.create_task(read())
        await until(lambda: session.link is not None, "connected")
        await publish(mosquitto.port, "t/1", b"before")
        await until(lambda: got == [b"before"], "the first message")

        mosquitto.stop()
        await until(lambda: session.counters.connect_failures >= 3, "failed attempts")
        assert session.unavailable is not None
        mosquitto.restart()
        await until(lambda: session.link is not None and session.link.connected, "reconnected")
        await publish(mosquitto.port, "t/2", b"after")
        await until(lambda: got == [b"before", b"after"], "a message after the restart")
        assert session.unavailable is None
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "cloud_bridge.session"]
    warnings = [m for lvl, m in said if lvl == logging.WARNING]
    assert len(warnings) == 1 and "lost the broker" in warnings[0], said
    assert "check" not in warnings[0]  # a loss has no hint; a refused or failed connect has
    assert [m for _, m in said if "reachable again" in m] == [
        f"test: broker 127.0.0.1:{mosquitto.port} reachable again"
    ]
    assert sum("subscribed to t/#" in m for _, m in said) == 2  # on each connection


async def test_backoff_waits_on_the_injected_clock_and_the_first_failure_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    s = settings(free_port(), reconnect_initial_s=10, reconnect_max_s=60)
    async with MqttSession(s, clock=clock) as session:
        task = asyncio.create_task(session.connect())
        await until(lambda: clock.sleepers == 1, "backing off")
        assert session.counters.connect_failures == 1
        await asyncio.sleep(0.2)
        assert session.counters.connect_failures == 1  # no real time passes a virtual wait
        # delay n lies in [base/2, base] (base 10, 20, 40 s): each advance wakes exactly one
        await clock.advance(10)
        await until(lambda: session.counters.connect_failures == 2, "a second attempt")
        # the failure is counted before the backoff sleep is taken: advancing the clock in
        # between would move time past a sleep that does not exist yet
        await until(lambda: clock.sleepers == 1, "backing off again")
        await clock.advance(20)
        await until(lambda: session.counters.connect_failures == 3, "a third attempt")
        await until(lambda: clock.sleepers == 1, "backing off a third time")
        assert session.counters.connect_failures == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert "check the broker is running and reachable" in warnings[0].getMessage()


async def test_the_next_endpoint_is_tried_when_one_is_down(mosquitto: Broker) -> None:
    dead = free_port()
    s = settings(dead, endpoints=(Endpoint("127.0.0.1", mosquitto.port),))
    async with MqttSession(s) as session:
        async with asyncio.timeout(10):
            link = await session.connect()
        assert link is not None and link.connected
        assert session.endpoint == Endpoint("127.0.0.1", mosquitto.port)
        assert session.counters.connect_failures == 1
    assert not link.connected  # closed on the way out


async def test_stop_ends_the_messages_at_once_even_while_backing_off() -> None:
    stop = asyncio.Event()
    s = settings(free_port(), reconnect_initial_s=30, reconnect_max_s=30)
    async with MqttSession(s, stop=stop) as session:

        async def read() -> list[Message]:
            return [m async for m in session.messages()]

        reader = asyncio.create_task(read())
        await until(lambda: session.counters.connect_failures == 1, "a failed attempt")
        stop.set()
        async with asyncio.timeout(2):
            assert await reader == []


async def test_a_will_per_attempt_and_a_failing_on_connect_is_a_failed_attempt(
    mosquitto: Broker,
) -> None:
    wills: list[int] = []
    births: list[int] = []

    async def will() -> Will:
        wills.append(len(wills) + 1)
        return Will("state", b"gone %d" % wills[-1])

    async def on_connect(link: MqttLink) -> None:
        births.append(wills[-1])
        if len(births) == 1:
            raise LinkError("no birth acknowledgement")

    async with MqttSession(settings(mosquitto.port), will=will, on_connect=on_connect) as session:
        async with asyncio.timeout(10):
            link = await session.connect()
        assert link is not None and link.settings.will == Will("state", b"gone 2")
        assert (wills, births) == ([1, 2], [1, 2])
        assert (session.counters.connects, session.counters.connect_failures) == (1, 1)


async def test_a_link_whose_own_task_died_is_raised_not_reconnected(mosquitto: Broker) -> None:
    async with MqttSession(settings(mosquitto.port)) as session:
        link = await session.connect()
        assert link is not None
        broke_keepalive(link)

        async def read_all() -> None:
            async with asyncio.timeout(10):
                async for _msg in session.messages():
                    pass

        with pytest.raises(RuntimeError, match="keepalive tick broke") as crash:
            await read_all()
        assert any("keepalive task" in note for note in crash.value.__notes__)
        assert session.counters.connects == 1  # not hidden behind a reconnect


async def test_a_persistent_session_with_a_backlog_larger_than_half_the_queue_gets_subscribed(
    tmp_path: Any,
) -> None:
    """A worker coming back to a session the broker kept, with more queued than half its
    queue: the queued messages arrive before the SUBACK. The link must not stop reading then
    (the SUBACK would never be read, the subscribe would time out, and it would reconnect in a
    loop); it reads on, and every message is received once the session is up."""
    broker = Broker.start(tmp_path / "broker", extra_conf="max_queued_messages 10000\n")
    try:
        queued = 1_500
        link = LinkSettings(
            "127.0.0.1",
            broker.port,
            client_id="worker",
            connect_timeout_s=3,
            clean_session=False,
            session_expiry_s=3600,
            manual_ack=True,
            receive_maximum=1000,
            message_queue=200,
        )
        s = SessionSettings(
            link=link,
            subscriptions=(Subscription("t/#", qos=1), Subscription("u/#", qos=1)),
            reconnect_initial_s=0.05,
            reconnect_max_s=0.2,
            name="worker",
        )
        async with MqttSession(s) as session:  # the broker learns the session, then it leaves
            async with asyncio.timeout(10):
                assert await session.connect() is not None
            await session.end()
        async with MqttLink.open(LinkSettings("127.0.0.1", broker.port, client_id="pub")) as pub:
            for i in range(queued):
                await pub.send(f"t/{i % 7}", str(i).encode(), qos=1)
            await pub.publish("t/last", b"last")
        got: list[bytes] = []
        async with MqttSession(s) as session:
            async with asyncio.timeout(15):
                up = await session.connect()
                assert up is not None
                assert session.counters.connect_failures == 0
                while len(got) < queued + 1:
                    msg = await up.receive()
                    got.append(msg.payload)
                    up.ack(msg)
        assert sorted(got[:-1], key=int) == [str(i).encode() for i in range(queued)]
        assert got[-1] == b"last"
    finally:
        broker.stop()
