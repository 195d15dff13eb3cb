"""The MQTT link against the real mosquitto (and the embedded amqtt broker for 3.1.1)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.link import LinkError, LinkLost, LinkRefused, LinkSettings, MqttLink
from protocols import mqtt_wire as wire
from sim.localsite import Broker, free_port, start_broker
from tests.cloud_bridge.test_session import broke_keepalive


def settings(port: int, **kw: Any) -> LinkSettings:
    kw.setdefault("client_id", "t")
    return LinkSettings(host="127.0.0.1", port=port, connect_timeout_s=5, **kw)


async def test_publish_qos1_is_acknowledged_and_received(mosquitto: Broker) -> None:
    async with (
        MqttLink.open(settings(mosquitto.port, client_id="sub")) as sub,
        MqttLink.open(settings(mosquitto.port, client_id="pub")) as pub,
    ):
        await sub.subscribe("t/#", qos=1)
        assert pub.protocol_used == "5"
        acks = [await pub.send(f"t/{i}", str(i).encode()) for i in range(200)]
        await asyncio.wait_for(asyncio.gather(*acks), 10)
        got = []
        async with asyncio.timeout(10):
            async for msg in sub.messages():
                got.append(int(msg.payload))
                if len(got) == 200:
                    break
        assert got == list(range(200))
        assert pub.in_flight == 0
    assert not pub.connected and not sub.connected  # closed on the way out


async def test_a_failing_keepalive_task_ends_the_link_and_is_raised(mosquitto: Broker) -> None:
    """The link's one task (the keepalive tick) used to be nobody's: when it failed, the link
    looked up while nothing pinged the broker, and the error went to the loop's log."""

    async def use_a_broken_link() -> None:
        async with MqttLink.open(settings(mosquitto.port)) as link:
            broke_keepalive(link)
            why = await asyncio.wait_for(link.wait_lost(), 5)
            assert "keepalive task failed" in why
            assert isinstance(link.crash, RuntimeError)
            with pytest.raises(LinkLost):
                await link.publish("a", b"b")

    with pytest.raises(RuntimeError, match="keepalive tick broke"):  # leaving the block raises it
        await use_a_broken_link()


async def test_a_cancelled_connect_leaves_no_task_or_socket_behind() -> None:
    """A peer that accepts TCP and never answers CONNECT; the connect is cancelled."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:

        async def connect() -> MqttLink:
            return await MqttLink.open(settings(port, protocol="5"))

        opening = asyncio.create_task(connect())
        await asyncio.sleep(0.5)  # connected, waiting for the CONNACK
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await asyncio.wait_for(closed.wait(), 5)  # the socket was closed
        await asyncio.sleep(0)
        left = [t for t in asyncio.all_tasks() if t.get_name().startswith("mqtt keepalive")]
        assert left == []
    finally:
        server.close()


async def test_window_follows_the_brokers_receive_maximum(tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_broker(
        port, tmp_path, extra_conf="max_inflight_messages 7\n", prefer="mosquitto"
    )
    try:
        link = await MqttLink.open(settings(port, max_inflight=100))
        assert link.receive_maximum == 7
        acks = [await link.send("w", b"x") for _ in range(50)]
        await asyncio.wait_for(asyncio.gather(*acks), 10)
        await link.close()
    finally:
        proc.stop()


async def test_falls_back_to_mqtt_311(tmp_path: Path) -> None:
    port = free_port()
    proc, kind = start_broker(port, tmp_path, prefer="amqtt")
    assert kind == "amqtt"
    try:
        link = await MqttLink.open(settings(port))
        assert link.protocol_used == "3.1.1"
        await link.publish("x/y", b"1")
        await link.close()
    finally:
        proc.stop()


async def test_broker_loss_fails_unacknowledged_publishes(mosquitto: Broker) -> None:
    link = await MqttLink.open(settings(mosquitto.port, keepalive_s=5))
    mosquitto.proc.kill()
    why = await asyncio.wait_for(link.wait_lost(), 10)
    assert "disconnected" in why
    with pytest.raises(LinkLost):
        await link.publish("a", b"b")


async def test_nothing_listening_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="cannot connect"):
        await MqttLink.open(settings(free_port(), protocol="5"))


async def test_bad_password_is_refused(tmp_path: Path) -> None:
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    await asyncio.to_thread(
        subprocess.run, ["mosquitto_passwd", "-b", str(pwfile), "gw", "right"], check=True
    )
    port = free_port()
    proc, _ = start_broker(
        port, tmp_path, extra_conf=f"password_file {pwfile}\n", prefer="mosquitto"
    )
    # the generated config says allow_anonymous true; a password file still checks given names
    try:
        with pytest.raises(LinkRefused, match="refused"):
            await MqttLink.open(settings(port, username="gw", password="wrong", protocol="5"))
        ok = await MqttLink.open(settings(port, username="gw", password="right", protocol="5"))
        await ok.close()
    finally:
        proc.stop()


async def test_a_slow_reader_loses_nothing_reading_pauses_instead(mosquitto: Broker) -> None:
    sub = await MqttLink.open(
        settings(
            mosquitto.port,
            client_id="slow",
            manual_ack=True,
            receive_maximum=50,
            message_queue=100,
            clean_session=False,
            session_expiry_s=60,
        )
    )
    await sub.subscribe("flood/#", qos=1)
    pub = await MqttLink.open(settings(mosquitto.port, client_id="flood", max_inflight=1000))
    acks = [await pub.send("flood/x", str(i).encode()) for i in range(3000)]
    await asyncio.wait_for(asyncio.gather(*acks), 30)
    got: list[int] = []
    async with asyncio.timeout(60):
        while len(got) < 3000:
            msg = await sub.receive()
            got.append(int(msg.payload))
            sub.ack(msg)
            if len(got) % 200 == 0:
                await asyncio.sleep(0.05)  # a slow store
    assert got == list(range(3000))
    assert sub.dropped_messages == 0
    await pub.close()
    await sub.close()


async def scripted_broker(
    answer: Callable[[bytes], bytes | None], connack: bytes = b"\x20\x03\x00\x00\x00"
) -> tuple[asyncio.Server, int, list[bytes]]:
    """A peer on loopback that answers CONNECT with a CONNACK and then each read with
    ``answer(read)`` (None: nothing) — for what a real broker never does: hang, send garbage."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while data := await reader.read(65536):
            seen.append(data)
            out = connack if first else answer(data)
            first = False
            if out:
                writer.write(out)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_a_broker_that_stops_answering_pings_loses_the_link() -> None:
    server, port, seen = await scripted_broker(lambda _data: None)
    try:
        link = await MqttLink.open(settings(port, protocol="5", keepalive_s=1))
        why = await asyncio.wait_for(link.wait_lost(), 10)
        assert "no PINGRESP within 1 s" in why
        assert any(b"\xc0\x00" in d for d in seen)  # it did ask
        with pytest.raises(LinkLost):
            await link.publish("a", b"b")
        await link.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"\x62\x02\x00\x01", "not MQTT: packet type 6"),  # a PUBREL: QoS 2 was never asked
        (b"\x20\x03\x00\x00\x00", "a second CONNACK"),
        (b"\xe0\x01\x8b", "disconnected by the broker: Server shutting down"),
    ],
)
async def test_what_a_broker_must_not_send_ends_the_link_and_says_why(
    reply: bytes, why: str
) -> None:
    server, port, _seen = await scripted_broker(lambda _data: reply)
    try:
        link = await MqttLink.open(settings(port, protocol="5"))
        ack = await link.send("a/b", b"x")
        with pytest.raises(LinkLost, match=why):
            await asyncio.wait_for(ack, 10)
        assert why in link.lost_reason
        await link.close()
    finally:
        server.close()


async def test_a_publish_refused_by_the_broker_says_its_reason() -> None:
    # PUBACK with 0x87 for whatever packet id came (bytes 2..3 after the topic)
    def refuse(data: bytes) -> bytes:
        topic_len = int.from_bytes(data[2:4], "big")
        pid = data[4 + topic_len : 6 + topic_len]
        return b"\x40\x03" + pid + b"\x87"

    server, port, _seen = await scripted_broker(refuse)
    try:
        link = await MqttLink.open(settings(port, protocol="5"))
        with pytest.raises(LinkRefused, match="Not authorized"):
            await asyncio.wait_for(link.publish("a/b", b"x"), 10)
        assert link.connected and link.in_flight == 0
        with pytest.raises(ValueError, match="not an MQTT topic name"):
            await link.send("a/#", b"x")
        await link.close()
    finally:
        server.close()


async def test_the_brokers_keep_alive_is_the_one_used() -> None:
    """MQTT 5 3.2.2.3.14: a CONNACK's Server Keep Alive replaces the client's (a broker with a
    shorter one would otherwise hang up on a client that pings too seldom)."""
    connack = b"\x20\x06\x00\x00\x03\x13\x00\x01"  # Server Keep Alive 1 s
    server, port, seen = await scripted_broker(lambda _data: None, connack)
    try:
        link = await MqttLink.open(settings(port, protocol="5", keepalive_s=600))
        assert link.keepalive_s == 1
        why = await asyncio.wait_for(link.wait_lost(), 10)
        assert "no PINGRESP within 1 s" in why
        assert any(b"\xc0\x00" in d for d in seen)
        await link.close()
    finally:
        server.close()


async def test_send_nowait_calls_back_on_ack_and_says_false_when_the_window_is_full(
    tmp_path: Path,
) -> None:
    """The bridge's hot path: no future per publish. A full window (the broker's Receive
    Maximum, 3 here) sends nothing and says so; each acknowledgement calls back once, with
    None; the link's own waiting ``send`` goes on working beside it."""
    port = free_port()
    proc, _ = start_broker(
        port, tmp_path, extra_conf="max_inflight_messages 3\n", prefer="mosquitto"
    )
    try:
        async with MqttLink.open(settings(port, max_inflight=100)) as link:
            acked: list[tuple[int, BaseException | None]] = []

            def on_ack(i: int) -> Callable[[BaseException | None], None]:
                return lambda err: acked.append((i, err))

            for bad in ("a/#", "a/+", ""):  # refused before anything is written: no slot taken
                with pytest.raises(ValueError, match="not an MQTT topic name"):
                    link.send_nowait(bad, b"x", 1, on_ack(-1))
                with pytest.raises(ValueError, match="not an MQTT topic name"):
                    await link.send(bad, b"x")
            sent = [link.send_nowait("w", b"x", 1, on_ack(i)) for i in range(5)]
            assert sent == [True, True, True, False, False]  # nothing of the last two went out
            assert link.in_flight == 3
            await asyncio.wait_for(link.publish("w", b"y"), 10)  # waits for a slot
            assert sorted(acked) == [(0, None), (1, None), (2, None)]
            assert link.send_nowait("w", b"z", 0, lambda err: acked.append((9, err)))
            assert acked[-1] == (9, None)  # QoS 0: at once
    finally:
        proc.stop()


async def test_send_nowait_callbacks_hear_of_refusal_and_loss_and_cannot_break_the_link() -> None:
    def refuse(data: bytes) -> bytes:  # PUBACK 0x87 for the packet id after the topic
        topic_len = int.from_bytes(data[2:4], "big")
        return b"\x40\x03" + data[4 + topic_len : 6 + topic_len] + b"\x87"

    server, port, _seen = await scripted_broker(refuse)
    try:
        link = await MqttLink.open(settings(port, protocol="5"))
        got: list[BaseException | None] = []
        called = asyncio.Event()

        def broken(err: BaseException | None) -> None:
            called.set()
            raise RuntimeError("a bug in the caller")

        def heard(err: BaseException | None) -> None:
            got.append(err)
            called.set()

        async with asyncio.timeout(10):  # one at a time: the peer answers one per read
            assert link.send_nowait("a/b", b"1", 1, broken)
            await called.wait()
            called.clear()
            assert link.send_nowait("a/b", b"2", 1, heard)
            await called.wait()
        assert isinstance(got[0], LinkRefused) and "Not authorized" in str(got[0])
        assert link.connected and link.in_flight == 0  # the raising callback was logged only
        await link.close()
    finally:
        server.close()


async def test_send_nowait_callbacks_hear_of_a_lost_link(mosquitto: Broker) -> None:
    link = await MqttLink.open(settings(mosquitto.port, keepalive_s=5))
    got: list[BaseException | None] = []
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # nothing is acknowledged any more
    assert link.send_nowait("a", b"1", 1, got.append)
    await asyncio.sleep(0.1)
    assert got == []
    mosquitto.proc.kill()  # a stopped process dies of SIGKILL too: the connection ends
    await asyncio.wait_for(link.wait_lost(), 10)
    assert len(got) == 1 and isinstance(got[0], LinkLost)  # once, and not as an ack
    with pytest.raises(LinkLost):
        link.send_nowait("a", b"2", 1, got.append)


async def test_publishes_of_every_length_form_reach_the_broker_whole() -> None:
    """The link writes a PUBLISH's remaining length itself (one, two or three bytes, MQTT
    1.5.5): at the edges of each form, what the broker reads is what was published."""
    server, port, seen = await scripted_broker(lambda data: None)
    try:
        link = await MqttLink.open(settings(port, protocol="5"))
        topic = "t/x"
        overhead = 2 + len(topic) + 1  # topic length and name, no packet id (QoS 0), properties
        sizes = [n - overhead for n in (1 + overhead, 127, 128, 16383, 16384, 2_097_151)]
        for n in sizes:
            assert link.send_nowait(topic, bytes([n % 251]) * n, 0, lambda err: None)
        reader = wire.MqttReader(wire.V5, wire.DEFAULT_MAX_PACKET)
        got: list[bytes] = []
        del seen[0]  # the CONNECT (the link publishes only once it has the CONNACK)
        async with asyncio.timeout(10):
            while len(got) < len(sizes):
                await asyncio.sleep(0.01)
                while seen:
                    reader.push(seen.pop(0))
                    while (p := reader.pop()) is not None:
                        if isinstance(p, wire.Publish):
                            got.append(p.payload)
        assert [len(p) for p in got] == sizes
        assert all(p == bytes([len(p) % 251]) * len(p) for p in got)
        await link.close()
    finally:
        server.close()
