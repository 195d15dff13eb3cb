"""The node's frames against the golden vectors shared with the gateway (protocols/nodewire)."""

from t import eq, raises, vectors

from cenode import wire


def test_point_table_matches_the_gateway() -> None:
    eq(wire.POINT_IDS, vectors("nodewire.json")["points"])


def test_readings_frames_are_the_golden_bytes() -> None:
    for v in vectors("nodewire.json")["readings"]:
        got = wire.encode_readings(v["seq"], v["time"], [tuple(r) for r in v["readings"]])
        eq(got.hex(), v["hex"], v["name"])


def test_status_and_reply_frames_are_the_golden_bytes() -> None:
    doc = vectors("nodewire.json")
    for v in doc["status"]:
        got = wire.encode_status(v["seq"], v["time"], v["state"], tuple(v["version"]), v["reason"])
        eq(got.hex(), v["hex"], v["name"])
    for v in doc["reply"]:
        got = wire.encode_reply(v["seq"], v["time"], v["nonce"], v["result"], v["message"])
        eq(got.hex(), v["hex"], v["name"])


def test_first_vector_byte_by_byte() -> None:
    # header: magic, version 1, type 1, seq 1, time 1795500000; 3 readings
    frame = wire.encode_readings(1, 1795500000, [("fill_pct", 42.5), ("distance_mm", 640), ("temperature_c", 18.5)])
    want = bytes.fromhex("ce 01 01 0001 6b0527e0 03 01 04 422a0000 02 02 0280 03 04 41940000".replace(" ", ""))
    for i in range(len(want)):
        eq(frame[i], want[i], "byte " + str(i))
    eq(len(frame), len(want))


def test_long_text_is_cut_on_a_character_boundary() -> None:
    frame = wire.encode_status(1, 0, wire.OTA_REFUSED, (1, 0, 0), "é" * 40)
    reason = frame[14:]
    eq(len(reason), 64)
    eq(reason.decode(), "é" * 32)
    frame = wire.encode_status(1, 0, wire.OTA_REFUSED, (1, 0, 0), "a" + "é" * 40)
    eq(frame[14:].decode(), "a" + "é" * 31)


def test_bad_input_is_refused() -> None:
    for readings in ([], [("nope", 1)], [("fill_pct", 2**40)], [("fill_pct", float("nan"))]):
        with raises(ValueError):
            wire.encode_readings(1, 0, readings)
    with raises(ValueError):
        wire.encode_readings(70000, 0, [("fill_pct", 1)])
    for text in ("1.2", "a.b.c", "1.2.300"):
        with raises(ValueError):
            wire.parse_version(text)
    eq(wire.parse_version("1.2.3"), (1, 2, 3))
    eq(wire.topic("s", "n", "up"), "cityedge/node/v1/s/n/up")
