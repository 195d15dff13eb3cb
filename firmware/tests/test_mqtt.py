"""MQTT 3.1.1 packets as byte tables (OASIS MQTT 3.1.1, section 3)."""

from t import eq, raises

from cenode import mqtt


def test_connect_packet() -> None:
    # 3.1: fixed header 0x10, remaining length, "MQTT", level 4, flags, keepalive, client id
    eq(mqtt.connect_packet("n1", 30), bytes.fromhex("100e00044d5154540402001e00026e31"))
    p = mqtt.connect_packet("n", 60, user="u", password="p", will=("w", b"x", 1, True))
    # flags: user 0x80, password 0x40, will retain 0x20, will qos 1 0x08, will 0x04, clean 0x02
    eq(p[9], 0xEE)
    eq(p[-12:], b"\x00\x01w\x00\x01x\x00\x01u\x00\x01p"[-12:])


def test_publish_and_subscribe_packets() -> None:
    eq(mqtt.publish_packet("a/b", b"hi", 1, False, 10), bytes.fromhex("3209000361 2f62 000a 6869".replace(" ", "")))
    eq(mqtt.publish_packet("a", b"", 0, True), bytes.fromhex("3103000161"))
    eq(mqtt.publish_packet("a", b"", 1, False, 1, dup=True)[0], 0x3A)
    eq(mqtt.subscribe_packet(1, [("a/#", 1)]), bytes.fromhex("820800010003612f2301"))
    eq(mqtt.puback_packet(258), b"\x40\x02\x01\x02")


def test_remaining_length_encoding() -> None:
    # 2.2.3 table: 127 -> 7f, 128 -> 80 01, 16383 -> ff 7f, 16384 -> 80 80 01
    for n, want in ((0, "00"), (127, "7f"), (128, "8001"), (321, "c102"), (16383, "ff7f"), (16384, "808001")):
        eq(mqtt._remaining(n).hex(), want, str(n))


def test_reader_takes_packets_split_anywhere() -> None:
    stream = mqtt.publish_packet("t", b"x" * 200, 1, False, 7) + b"\xd0\x00" + b"\x40\x02\x00\x07"
    for cut in range(len(stream)):
        r = mqtt.Reader()
        r.feed(stream[:cut])
        got = r.packets()
        r.feed(stream[cut:])
        got += r.packets()
        eq([p[0] for p in got], [mqtt.PUBLISH, mqtt.PINGRESP, mqtt.PUBACK], "cut at " + str(cut))
    topic, payload, qos, pid, retain = mqtt.parse_publish(got[0][1], got[0][2])
    eq((topic, payload, qos, pid, retain), ("t", b"x" * 200, 1, 7, False))


def test_reader_refuses_garbage() -> None:
    r = mqtt.Reader(max_packet=100)
    r.feed(b"\x30\xff\xff\xff\xff\x01")
    with raises(mqtt.ProtocolError):
        r.packets()
    r = mqtt.Reader(max_packet=100)
    r.feed(b"\x30\xc8\x01")  # 200 bytes announced
    with raises(mqtt.ProtocolError):
        r.packets()
    for flags, body in ((0, b"\x00"), (6, b"\x00\x01a\x00\x01"), (2, b"\x00\x01a\x00")):
        with raises(mqtt.ProtocolError):
            mqtt.parse_publish(flags, body)
