"""MQTT 3.1.1 packets, the few a sensor node needs (OASIS MQTT 3.1.1, section 3).

Bytes-first and sans-IO: functions build packets, :class:`Reader` turns received bytes into
``(type, flags, body)`` tuples. The connection logic (reconnect, resubscribe, the offline queue)
is in :mod:`cenode.link`. QoS 0 and 1 only; packets larger than ``max_packet`` are a protocol
error (a node has little RAM; the broker is told nothing bigger is wanted by our own sizes).
"""

import struct

from cenode.compat import const

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBSCRIBE = const(8)
SUBACK = const(9)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# 3.2.2.3: CONNACK return codes
REFUSALS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class ProtocolError(Exception):
    """The peer broke MQTT (or sent more than we can hold)."""


def _remaining(n: int) -> bytes:
    # 2.2.3: variable-length "remaining length", 7 bits per byte, at most 4 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def connect_packet(
    client_id: str,
    keepalive_s: int,
    user: str | None = None,
    password: str | None = None,
    will: tuple | None = None,
    clean: bool = True,
) -> bytes:
    """``will`` is (topic, payload, qos, retain)."""
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    var = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack(">H", keepalive_s)
    body = var + payload
    return b"\x10" + _remaining(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, pid: int = 0, dup: bool = False
) -> bytes:
    head = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup and qos else 0)
    body = _str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return bytes((head,)) + _remaining(len(body)) + body


def subscribe_packet(pid: int, topics: list) -> bytes:
    """``topics``: (filter, qos) pairs."""
    body = struct.pack(">H", pid)
    for t, qos in topics:
        body += _str(t) + bytes((qos,))
    return b"\x82" + _remaining(len(body)) + body


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", pid)


def parse_publish(flags: int, body: bytes) -> tuple:
    """``(topic, payload, qos, pid, retain)`` of a PUBLISH body."""
    if len(body) < 2:
        raise ProtocolError("PUBLISH too short")
    n = struct.unpack_from(">H", body)[0]
    qos = (flags >> 1) & 3
    at = 2 + n
    if qos == 3 or len(body) < at + (2 if qos else 0):
        raise ProtocolError("bad PUBLISH")
    topic = bytes(body[2:at]).decode()
    pid = 0
    if qos:
        pid = struct.unpack_from(">H", body, at)[0]
        at += 2
    return topic, bytes(body[at:]), qos, pid, bool(flags & 1)


class Reader:
    """Collects received bytes; :meth:`packets` returns the complete ones."""

    def __init__(self, max_packet: int = 4096) -> None:
        self.buf = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> None:
        self.buf += data

    def packets(self) -> list:
        out = []
        while True:
            if len(self.buf) < 2:
                return out
            n = 0
            shift = 0
            i = 1
            while True:
                if i >= len(self.buf):
                    return out
                if i > 4:
                    raise ProtocolError("remaining length longer than 4 bytes")
                b = self.buf[i]
                n |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if not b & 0x80:
                    break
            if n > self.max_packet:
                raise ProtocolError("packet of " + str(n) + " bytes; at most " + str(self.max_packet))
            if len(self.buf) < i + n:
                return out
            first = self.buf[0]
            out.append((first >> 4, first & 0x0F, bytes(self.buf[i : i + n])))
            self.buf = self.buf[i + n :]
