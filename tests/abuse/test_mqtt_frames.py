"""The MQTT client codec under hostile bytes: whatever answers on a broker's port may send
anything; the link gets packets or :class:`MqttWireError` (it then hangs up) — nothing else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols import mqtt_wire as wire
from protocols.mqtt_wire import MqttReader, MqttWireError
from tests.abuse.fuzz import FUZZ, fuzz_input

SEEDS = [
    b"\x20\x06\x01\x00\x03\x21\x00\x07",  # CONNACK, Receive Maximum 7
    b"\x40\x02\x00\x07\x40\x03\x00\x08\x87",  # PUBACKs
    b"\x90\x05\x00\x02\x00\x00\x87",  # SUBACK
    b"\x30\x11\x00\x01t\x0c\x02\x00\x00\x00\x09\x26\x00\x01k\x00\x01vp",  # PUBLISH + properties
    wire.encode_publish("cityedge/v1/s/g/telemetry/d", b'{"a":1}', qos=1, packet_id=9),
    b"\xe0\x06\x98\x04\x1f\x00\x01z\xd0\x00",  # DISCONNECT with a reason string, PINGRESP
]
PACKET_TYPES = (
    wire.ConnAck,
    wire.Publish,
    wire.PubAck,
    wire.SubAck,
    wire.PingResp,
    wire.Disconnect,
)


@FUZZ
@given(data=fuzz_input(SEEDS), piece=st.integers(1, 64), version=st.sampled_from([4, 5]))
def test_fuzz_mqtt_stream(data: bytes, piece: int, version: int) -> None:
    whole = MqttReader(version, max_packet=4096)
    try:
        want = whole.feed(data)
    except MqttWireError:
        want = None
    reader, got = MqttReader(version, max_packet=4096), []
    try:
        for i in range(0, len(data), piece):
            got += reader.feed(data[i : i + piece])
    except MqttWireError:
        assert want is None or got == want[: len(got)]
        return
    if want is not None:  # the pieces frame exactly as the whole did
        assert got == want
    assert all(isinstance(p, PACKET_TYPES) for p in got)
