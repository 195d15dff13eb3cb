"""The MQTT client codec: byte tables from the standards (MQTT 5.0 and 3.1.1), round trips,
split and glued streams, and every way a server's bytes can be wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import mqtt_wire as wire
from protocols.errors import DecodeError, EncodeError
from protocols.mqtt_wire import (
    ConnAck,
    Disconnect,
    MqttReader,
    MqttWireError,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    WillMessage,
)

# v5 1.5.5 Table 1-1 and v3 2.2.3 Table 2.4: the size of a variable byte integer
VARINTS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("n", "encoded"), VARINTS)
def test_variable_byte_integers_from_the_standard(n: int, encoded: bytes) -> None:
    assert wire.varint(n) == encoded
    if n < 100_000:  # read back as a DISCONNECT's remaining length (its body is ignored)
        packet = b"\xe0" + encoded + b"\x00" * n
        assert MqttReader(max_packet=n + 8).feed(packet) == [Disconnect(0)]


@pytest.mark.parametrize("n", [-1, 268_435_456])
def test_a_varint_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(EncodeError):
        wire.varint(n)


def test_connect_variable_header_examples_of_both_standards() -> None:
    # v5 3.1.2.11, Figure 3-6: "MQTT", level 5, flags 0xCE, keep alive 10, properties:
    # Session Expiry Interval 10
    will = WillMessage("w", b"x", qos=1, retain=False)
    v5 = wire.encode_connect(
        client_id="c",
        version=wire.V5,
        keepalive_s=10,
        clean_start=True,
        username="u",
        password="p",
        will=will,
        session_expiry_s=10,
    )
    header5 = b"\x00\x04MQTT\x05\xce\x00\x0a\x05\x11\x00\x00\x00\x0a"
    payload5 = b"\x00\x01c" + b"\x00" + b"\x00\x01w\x00\x01x" + b"\x00\x01u\x00\x01p"
    assert v5 == b"\x10" + bytes((len(header5) + len(payload5),)) + header5 + payload5
    # v3 3.1.2.10, Figure 3.6: "MQTT", level 4, flags 0xCE, keep alive 10
    v3 = wire.encode_connect(
        client_id="c",
        version=wire.V311,
        keepalive_s=10,
        username="u",
        password="p",
        will=will,
        session_expiry_s=10,  # not in v3: left out
    )
    header3 = b"\x00\x04MQTT\x04\xce\x00\x0a"
    payload3 = b"\x00\x01c" + b"\x00\x01w\x00\x01x" + b"\x00\x01u\x00\x01p"
    assert v3 == b"\x10" + bytes((len(header3) + len(payload3),)) + header3 + payload3


def test_connect_properties_a_client_announces() -> None:
    packet = wire.encode_connect(
        client_id="gw", receive_maximum=50, max_packet=2**20, clean_start=False, keepalive_s=30
    )
    # flags: nothing but (not) clean start; properties: Receive Maximum, Maximum Packet Size
    assert packet == (
        b"\x10\x17\x00\x04MQTT\x05\x00\x00\x1e\x08\x21\x00\x32\x27\x00\x10\x00\x00\x00\x02gw"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": 3}, "protocol level"),
        ({"keepalive_s": 70_000}, "keep alive"),
        ({"will": WillMessage("w", b"", qos=2)}, "will QoS"),
        ({"client_id": "x" * 70_000}, "client id"),
    ],
)
def test_connect_refuses_what_mqtt_cannot_carry(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"client_id": "c", **kwargs}
    with pytest.raises(EncodeError, match=match):
        wire.encode_connect(**args)  # type: ignore[arg-type]


def test_publish_bytes_from_the_standard() -> None:
    # v3 3.3.2.3 Figure 3.11: topic "a/b", packet identifier 10
    assert wire.encode_publish("a/b", b"", qos=1, packet_id=10, version=wire.V311) == (
        b"\x32\x07\x00\x03a/b\x00\x0a"
    )
    # v5 adds a property length of 0; QoS 0 has no packet identifier; retain is bit 0
    assert wire.encode_publish("a/b", b"hi", qos=1, packet_id=10) == (
        b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi"
    )
    assert wire.encode_publish("a/b", b"hi", qos=0, retain=True) == b"\x31\x08\x00\x03a/b\x00hi"
    assert wire.encode_publish("t", b"", qos=1, packet_id=1, dup=True)[0] == 0x3A


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"qos": 2, "packet_id": 1}, "QoS 2"),
        ({"qos": 1, "packet_id": 0}, "packet identifier 0"),
        ({"qos": 1, "packet_id": 65_536}, "packet identifier 65536"),
        ({"topic": ""}, "needs a topic"),
        ({"topic": "t" * 65_536}, "topic"),
    ],
)
def test_publish_refuses_what_mqtt_cannot_carry(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"topic": "t", "payload": b"", "qos": 1, "packet_id": 1, **kwargs}
    with pytest.raises(EncodeError, match=match):
        wire.encode_publish(**args)  # type: ignore[arg-type]


def test_small_packets_from_the_standard() -> None:
    assert wire.encode_puback(0x1234) == b"\x40\x02\x12\x34"  # v5 3.4.2.1: reason left out
    assert wire.PINGREQ_BYTES == b"\xc0\x00"  # 3.12
    assert wire.encode_disconnect() == b"\xe0\x00"  # 3.14.2.1: reason left out
    # 3.8: fixed header 0x82; packet id, (v5) properties, filter, options
    assert wire.encode_subscribe(1, "a/#", 1) == b"\x82\x09\x00\x01\x00\x00\x03a/#\x01"
    assert wire.encode_subscribe(1, "a/#", 0, wire.V311) == b"\x82\x08\x00\x01\x00\x03a/#\x00"
    with pytest.raises(EncodeError):
        wire.encode_subscribe(1, "", 1)


# what a server sends: (version, bytes, packets)
SERVER_PACKETS: list[tuple[int, bytes, list[wire.Packet]]] = [
    (wire.V5, b"\x20\x03\x00\x00\x00", [ConnAck(False, 0)]),
    (wire.V5, b"\x20\x06\x01\x00\x03\x21\x00\x07", [ConnAck(True, 0, receive_maximum=7)]),
    (
        wire.V5,
        b"\x20\x0c\x00\x00\x09\x27\x00\x01\x00\x00\x12\x00\x01x",
        [ConnAck(False, 0, maximum_packet_size=65_536, assigned_client_id="x")],
    ),
    (wire.V5, b"\x20\x06\x00\x00\x03\x13\x00\x05", [ConnAck(False, 0, server_keep_alive=5)]),
    (wire.V5, b"\x20\x03\x00\x87\x00", [ConnAck(False, 0x87)]),  # Not authorized
    (wire.V5, b"\x20\x02\x00\x01", [ConnAck(False, 1)]),  # a v3 broker's answer to v5
    (wire.V311, b"\x20\x02\x00\x05", [ConnAck(False, 5)]),
    (wire.V5, b"\x40\x02\x00\x07", [PubAck(7)]),
    (wire.V5, b"\x40\x03\x00\x07\x87", [PubAck(7, 0x87)]),
    (wire.V5, b"\x40\x04\x00\x07\x10\x00", [PubAck(7, 0x10)]),
    (wire.V5, b"\x40\x07\x00\x07\x87\x03\x1f\x00\x00", [PubAck(7, 0x87)]),
    (wire.V5, b"\x90\x04\x00\x02\x00\x01", [SubAck(2, (1,))]),
    (wire.V5, b"\x90\x05\x00\x02\x00\x00\x87", [SubAck(2, (0, 0x87))]),
    (wire.V311, b"\x90\x03\x00\x02\x80", [SubAck(2, (0x80,))]),
    (wire.V5, b"\xd0\x00", [PingResp()]),
    (wire.V5, b"\xe0\x00", [Disconnect(0)]),
    (wire.V5, b"\xe0\x01\x8b", [Disconnect(0x8B)]),
    (wire.V5, b"\xe0\x06\x98\x04\x1f\x00\x01z", [Disconnect(0x98, "z")]),
    (wire.V5, b"\x30\x06\x00\x01t\x00hi", [Publish("t", b"hi", 0, False, False, 0)]),
    (wire.V5, b"\x3b\x07\x00\x01t\x00\x05\x00\x01", [Publish("t", b"\x01", 1, True, True, 5)]),
    (wire.V311, b"\x32\x07\x00\x01t\x00\x05hi", [Publish("t", b"hi", 1, False, False, 5)]),
    (
        wire.V5,  # a PUBLISH with properties (Message Expiry Interval, a User Property)
        b"\x30\x11\x00\x01t\x0c\x02\x00\x00\x00\x09\x26\x00\x01k\x00\x01vp",
        [Publish("t", b"p", 0, False, False, 0)],
    ),
]


@pytest.mark.parametrize(("version", "data", "packets"), SERVER_PACKETS)
def test_server_packets(version: int, data: bytes, packets: list[wire.Packet]) -> None:
    assert MqttReader(version).feed(data) == packets


def test_split_and_glued_frames_give_the_same_packets() -> None:
    stream = b"".join(d for v, d, _ in SERVER_PACKETS if v == wire.V5)
    want = [p for v, _, ps in SERVER_PACKETS if v == wire.V5 for p in ps]
    assert MqttReader().feed(stream) == want
    for piece in (1, 2, 3, 7, 64):
        reader, got = MqttReader(), []
        for i in range(0, len(stream), piece):
            got += reader.feed(stream[i : i + piece])
        assert got == want
        assert reader.buffered == 0


def test_pop_leaves_the_rest_for_later() -> None:
    reader = MqttReader()
    reader.push(b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02")
    assert reader.pop() == PubAck(1)
    assert reader.buffered == 6
    reader.push(b"\x00\x03")
    assert reader.pop() == PubAck(2)
    assert reader.pop() == PubAck(3)
    assert reader.pop() is None


BROKEN: list[tuple[bytes, str]] = [
    (b"\x10\x00", "type 1"),  # a CONNECT: servers do not send one
    (b"\x62\x02\x00\x01", "type 6"),  # PUBREL: QoS 2 is never asked for
    (b"\xf0\x00", "type 15"),  # AUTH
    (b"\x00\x00", "type 0"),  # reserved
    (b"\x41\x02\x00\x01", "reserved flags"),
    (b"\xd0\x01\x00", "PINGRESP with a body"),
    (b"\x20\x02\x02\x00", "CONNACK flags"),
    (b"\x20\x01\x00", "ends 1 bytes early"),
    (b"\x20\x06\x00\x00\x03\x21\x00\x00", "Receive Maximum 0"),
    (b"\x20\x05\x00\x00\x02\x7f\x00", "unknown property"),
    (b"\x20\x05\x00\x00\x09\x21\x00", "run past"),
    (b"\x90\x03\x00\x01\x00", "without a reason code"),
    (b"\x34\x05\x00\x01t\x00\x01", "QoS 2"),
    (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
    (b"\x32\x06\x00\x01t\x00\x00\x00", "identifier 0"),
    (b"\x30\x03\x00\x00\x00", "without a topic"),
    (b"\x30\x05\x00\x02\xc3\x28\x00", "not UTF-8"),
    (b"\x30\xff\xff\xff\xff\x01", "four bytes"),
    (b"\x30\xff\xff\xff\x7f", "over the limit"),
]


@pytest.mark.parametrize(("data", "match"), BROKEN)
def test_what_a_server_must_not_send_breaks_the_stream(data: bytes, match: str) -> None:
    with pytest.raises(MqttWireError, match=match):
        MqttReader().feed(data)
    assert issubclass(MqttWireError, DecodeError)


def test_reason_names() -> None:
    assert wire.reason_name(0x87) == "Not authorized"
    assert wire.reason_name(0x86) == "Bad user name or password"
    assert wire.reason_name(4, wire.V311) == "Bad user name or password"
    assert wire.reason_name(0xFE) == "reason code 0xfe"
    assert wire.is_failure(0x80) and not wire.is_failure(0x10)


@given(
    topic=st.text(min_size=1, max_size=80).filter(lambda t: len(t.encode()) < 65_536),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    pid=st.integers(1, 65_535),
    retain=st.booleans(),
    version=st.sampled_from([wire.V311, wire.V5]),
)
def test_a_publish_reads_back_as_it_was_written(
    topic: str, payload: bytes, qos: int, pid: int, retain: bool, version: int
) -> None:
    data = wire.encode_publish(
        topic, payload, qos=qos, packet_id=pid, retain=retain, version=version
    )
    packets = MqttReader(version).feed(data)
    assert packets == [Publish(topic, payload, qos, retain, False, pid if qos else 0)]


@given(pids=st.lists(st.integers(1, 65_535), max_size=50), piece=st.integers(1, 9))
def test_pubacks_read_back_in_any_pieces(pids: list[int], piece: int) -> None:
    stream = b"".join(wire.encode_puback(p) for p in pids)
    reader, got = MqttReader(), []
    for i in range(0, len(stream), piece):
        got += reader.feed(stream[i : i + piece])
    assert got == [PubAck(p) for p in pids]
