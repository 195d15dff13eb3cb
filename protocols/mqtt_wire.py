"""MQTT on the wire, sans-IO: the packets a client sends and reads, for MQTT 5.0 and 3.1.1.
Bytes in, typed packets out; nothing here opens a socket (:mod:`cloud_bridge.link` does).

Sources: MQTT Version 5.0, OASIS Standard, 7 March 2019 (*v5*), and MQTT Version 3.1.1, OASIS
Standard, 29 October 2014 (*v3*). Section numbers below are v5's.

- Encoders for what a client sends: CONNECT (3.1, with a will, user name, password, and the v5
  properties Session Expiry Interval, Receive Maximum and Maximum Packet Size), PUBLISH (3.3,
  QoS 0 or 1, no properties), PUBACK (3.4), SUBSCRIBE (3.8, one filter), PINGREQ (3.12) and
  DISCONNECT (3.14). A value the protocol cannot carry (a string over 65,535 bytes, a packet
  over 268,435,455, a packet id of 0, QoS 2) raises :class:`~protocols.errors.EncodeError`.
- :class:`MqttReader` takes whatever bytes arrived — part of a packet, several glued together
  — and returns each complete packet a client can receive: :class:`ConnAck`, :class:`Publish`,
  :class:`PubAck`, :class:`SubAck`, :class:`PingResp`, :class:`Disconnect`. Anything else
  (a packet type a server never sends to a client, reserved flags, a remaining length of more
  than four bytes, a packet over the reader's ``max_packet``, a string that is not UTF-8, a
  truncated body) raises :class:`MqttWireError`, a :class:`~protocols.errors.DecodeError`: the
  stream cannot be trusted any more and the connection must be closed (4.13).
- :func:`reason_name` names a reason code (2.4; v3's CONNACK return codes 1-5 as well).

Only what a QoS 0/1 client uses is here: QoS 2 packets (PUBREC, PUBREL, PUBCOMP) and AUTH are
refused as unexpected, since the client never asks for QoS 2 or enhanced authentication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.errors import DecodeError, EncodeError

V311: Final = 4  # the protocol level byte of MQTT 3.1.1 (v3 3.1.2.2)
V5: Final = 5

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ_BYTES: Final = b"\xc0\x00"
PINGRESP: Final = 13
DISCONNECT: Final = 14

MAX_REMAINING: Final = 268_435_455  # four bytes of variable byte integer (1.5.5)
DEFAULT_MAX_PACKET: Final = 16 * 2**20

# v5 properties (2.2.2.2) this module writes or reads
SESSION_EXPIRY: Final = 0x11
RECEIVE_MAXIMUM: Final = 0x21
MAXIMUM_PACKET_SIZE: Final = 0x27
REASON_STRING: Final = 0x1F
SERVER_KEEP_ALIVE: Final = 0x13
ASSIGNED_CLIENT_ID: Final = 0x12

# property id -> how its value is encoded (2.2.2.2): its length in bytes, or "s" (a UTF-8
# string), "b" (binary data), "p" (a string pair), "v" (a variable byte integer)
_PROPERTY_KIND: Final[dict[int, int | str]] = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "b", 0x0B: "v", 0x11: 4, 0x12: "s", 0x13: 2,
    0x15: "s", 0x16: "b", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s", 0x1F: "s", 0x21: 2,
    0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip

REASONS: Final[dict[int, str]] = {  # 2.4, Table 2-6
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2", 0x04: "Disconnect with will",
    0x10: "No matching subscribers", 0x11: "No subscription existed",
    0x18: "Continue authentication", 0x19: "Re-authenticate", 0x80: "Unspecified error",
    0x81: "Malformed packet", 0x82: "Protocol error", 0x83: "Implementation specific error",
    0x84: "Unsupported protocol version", 0x85: "Client identifier not valid",
    0x86: "Bad user name or password", 0x87: "Not authorized", 0x88: "Server unavailable",
    0x89: "Server busy", 0x8A: "Banned", 0x8B: "Server shutting down",
    0x8C: "Bad authentication method", 0x8D: "Keep alive timeout", 0x8E: "Session taken over",
    0x8F: "Topic filter invalid", 0x90: "Topic name invalid", 0x91: "Packet identifier in use",
    0x92: "Packet identifier not found", 0x93: "Receive maximum exceeded",
    0x94: "Topic alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high",
    0x97: "Quota exceeded", 0x98: "Administrative action", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server",
    0x9D: "Server moved", 0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported", 0xA2: "Wildcard subscriptions not supported",
}  # fmt: skip
CONNACK_V3: Final[dict[int, str]] = {  # v3 3.2.2.3, Table 3.1
    0: "Connection accepted", 1: "Unacceptable protocol version", 2: "Identifier rejected",
    3: "Server unavailable", 4: "Bad user name or password", 5: "Not authorized",
}  # fmt: skip


class MqttWireError(DecodeError):
    """The bytes cannot be an MQTT packet a server sends a client: close the connection."""


def reason_name(code: int, version: int = V5) -> str:
    """A reason code's name (a v3 CONNACK return code's under ``version=V311``)."""
    table = CONNACK_V3 if version == V311 else REASONS
    return table.get(code, f"reason code 0x{code:02x}")


def is_failure(code: int) -> bool:
    """Reason codes of 0x80 and above say the request failed (2.4)."""
    return code >= 0x80


# -- encoding ---------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """A variable byte integer (1.5.5)."""
    if not 0 <= n <= MAX_REMAINING:
        raise EncodeError(f"{n} cannot be a variable byte integer (0..{MAX_REMAINING})")
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def utf8(text: str | bytes, what: str = "string") -> bytes:
    """A UTF-8 encoded string with its two-byte length (1.5.4)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > 0xFFFF:
        raise EncodeError(f"the {what} is {len(raw)} bytes long; MQTT allows 65,535")
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _packet_id(pid: int) -> bytes:
    if not 1 <= pid <= 0xFFFF:
        raise EncodeError(f"packet identifier {pid} is not in 1..65535 (2.2.1)")
    return pid.to_bytes(2, "big")


def _properties(props: dict[int, int]) -> bytes:
    out = bytearray()
    for pid, value in props.items():
        out.append(pid)
        out += value.to_bytes(int(_PROPERTY_KIND[pid]), "big")
    return varint(len(out)) + bytes(out)


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def encode_connect(
    *,
    client_id: str,
    version: int = V5,
    keepalive_s: int = 60,
    clean_start: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: WillMessage | None = None,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
    max_packet: int | None = None,
) -> bytes:
    """CONNECT (3.1). v3 ignores the v5 properties."""
    if version not in (V311, V5):
        raise EncodeError(f"protocol level {version} is neither 4 (3.1.1) nor 5")
    if not 0 <= keepalive_s <= 0xFFFF:
        raise EncodeError(f"keep alive {keepalive_s} s is not in 0..65535")
    flags = 0x02 if clean_start else 0
    if will is not None:
        if will.qos not in (0, 1):
            raise EncodeError(f"will QoS {will.qos}: only 0 and 1 are supported")
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = bytearray(utf8("MQTT") + bytes((version, flags)) + keepalive_s.to_bytes(2, "big"))
    if version == V5:
        props: dict[int, int] = {}
        if session_expiry_s:
            props[SESSION_EXPIRY] = session_expiry_s
        if receive_maximum:
            props[RECEIVE_MAXIMUM] = receive_maximum
        if max_packet:
            props[MAXIMUM_PACKET_SIZE] = max_packet
        body += _properties(props)
    body += utf8(client_id, "client id")
    if will is not None:
        if version == V5:
            body += b"\x00"  # no will properties
        body += utf8(will.topic, "will topic") + utf8(will.payload, "will payload")
    if username is not None:
        body += utf8(username, "user name")
    if password is not None:
        body += utf8(password, "password")
    return _packet(CONNECT << 4, bytes(body))


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 1,
    packet_id: int = 0,
    retain: bool = False,
    version: int = V5,
    dup: bool = False,
) -> bytes:
    """PUBLISH (3.3): QoS 0 (no packet id) or 1, no properties."""
    if qos not in (0, 1):
        raise EncodeError(f"QoS {qos}: only 0 and 1 are supported")
    if not topic:
        raise EncodeError("a PUBLISH needs a topic name")
    head = utf8(topic, "topic")
    if qos:
        head += _packet_id(packet_id)
    if version == V5:
        head += b"\x00"
    first = PUBLISH << 4 | qos << 1 | (1 if retain else 0) | (8 if dup and qos else 0)
    return bytes((first,)) + varint(len(head) + len(payload)) + head + payload


def encode_puback(packet_id: int) -> bytes:
    """PUBACK (3.4) with success: in v5 the reason code may be left out when it is 0x00."""
    return b"\x40\x02" + _packet_id(packet_id)


def encode_subscribe(packet_id: int, topic_filter: str, qos: int = 1, version: int = V5) -> bytes:
    """SUBSCRIBE (3.8) with one topic filter and its maximum QoS (v5 options otherwise 0)."""
    if qos not in (0, 1):
        raise EncodeError(f"QoS {qos}: only 0 and 1 are supported")
    if not topic_filter:
        raise EncodeError("a SUBSCRIBE needs a topic filter")
    body = _packet_id(packet_id) + (b"\x00" if version == V5 else b"")
    body += utf8(topic_filter, "topic filter") + bytes((qos,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_disconnect() -> bytes:
    """DISCONNECT (3.14): normal disconnection (v5 lets the reason code 0x00 be left out)."""
    return b"\xe0\x00"


# -- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason: int  # v5 reason code, or v3's return code (0 is success in both)
    receive_maximum: int | None = None
    maximum_packet_size: int | None = None
    assigned_client_id: str | None = None
    reason_string: str | None = None
    server_keep_alive: int | None = None  # the keep alive the client must use instead (3.2.2.3.14)


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int  # 0 at QoS 0


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason: int = 0


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int = 0
    reason_string: str | None = None


Packet = ConnAck | Publish | PubAck | SubAck | PingResp | Disconnect
_PING = PingResp()


class _Body:
    """A cursor over one packet's body; any read past its end is a truncated packet."""

    __slots__ = ("data", "i", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.i, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        j = self.i + n
        if j > len(self.data):
            raise MqttWireError(f"{self.what} ends {j - len(self.data)} bytes early")
        out, self.i = self.data[self.i : j], j
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            b = self.u8()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
        raise MqttWireError(f"a variable byte integer in {self.what} runs past four bytes")

    def string(self) -> str:
        raw = self.take(self.u16())
        try:
            return raw.decode()
        except UnicodeDecodeError as err:
            raise MqttWireError(f"a string in {self.what} is not UTF-8: {err}") from None

    def left(self) -> int:
        return len(self.data) - self.i

    def properties(self) -> dict[int, int | str | bytes]:
        """v5 properties (2.2.2): integers and strings by id; string pairs are skipped."""
        end = self.varint() + self.i
        if end > len(self.data):
            raise MqttWireError(f"the properties of {self.what} run past its end")
        out: dict[int, int | str | bytes] = {}
        while self.i < end:
            pid = self.u8()
            kind = _PROPERTY_KIND.get(pid)
            if kind is None:
                raise MqttWireError(f"unknown property 0x{pid:02x} in {self.what}")
            if kind == "s":
                out[pid] = self.string()
            elif kind == "b":
                out[pid] = self.take(self.u16())
            elif kind == "p":
                self.string(), self.string()
            elif kind == "v":
                out[pid] = self.varint()
            else:
                out[pid] = int.from_bytes(self.take(int(kind)), "big")
        if self.i != end:
            raise MqttWireError(f"the properties of {self.what} run past their length")
        return out


class MqttReader:
    """A client's incoming byte stream, framed into packets (see the module docstring)."""

    def __init__(self, version: int = V5, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.version = version
        self.max_packet = max_packet
        self._buf = bytearray()
        self._pos = 0  # where the next packet starts in _buf

    def feed(self, data: bytes) -> list[Packet]:
        """Every packet completed by ``data``, in order; the rest is kept for the next call."""
        self.push(data)
        out: list[Packet] = []
        while (packet := self.pop()) is not None:
            out.append(packet)
        return out

    def push(self, data: bytes) -> None:
        """Take bytes that arrived, to be framed by :meth:`pop`."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes taken and not yet returned as packets."""
        return len(self._buf) - self._pos

    def pop(self) -> Packet | None:
        """The next complete packet, or None until more bytes are pushed."""
        buf, i = self._buf, self._pos
        n = len(buf)
        if i + 2 > n:
            return None
        first = buf[i]
        # the hot path: a PUBACK with success and nothing else (v5 3.4.2.1, v3 3.4)
        if first == 0x40 and buf[i + 1] == 2:
            if i + 4 > n:
                return None
            self._pos = i + 4
            return PubAck(buf[i + 2] << 8 | buf[i + 3])
        length, j = 0, i + 1
        for shift in (0, 7, 14, 21):
            if j >= n:
                return None
            b = buf[j]
            j += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
        else:
            raise MqttWireError("a remaining length runs past four bytes (1.5.5)")
        if j - i + length > self.max_packet:
            raise MqttWireError(
                f"a packet of {j - i + length} bytes is over the limit of {self.max_packet}"
            )
        if j + length > n:
            return None
        self._pos = j + length
        return self._decode(first, bytes(buf[j : j + length]), self.version == V5)

    def _decode(self, first: int, body: bytes, v5: bool) -> Packet:
        kind, flags = first >> 4, first & 0x0F
        if kind == PUBLISH:
            return self._publish(flags, body, v5)
        if flags:
            raise MqttWireError(f"packet type {kind} with reserved flags 0x{flags:x} (2.1.3)")
        if kind == PUBACK:
            b = _Body(body, "a PUBACK")
            pid = b.u16()
            reason = b.u8() if b.left() else 0
            if v5 and b.left():
                b.properties()
            return PubAck(pid, reason)
        if kind == CONNACK:
            return self._connack(body, v5)
        if kind == SUBACK:
            b = _Body(body, "a SUBACK")
            pid = b.u16()
            if v5:
                b.properties()
            if not b.left():
                raise MqttWireError("a SUBACK without a reason code")
            return SubAck(pid, tuple(b.take(b.left())))
        if kind == PINGRESP:
            if body:
                raise MqttWireError("a PINGRESP with a body")
            return _PING
        if kind == DISCONNECT:
            b = _Body(body, "a DISCONNECT")
            reason = b.u8() if b.left() else 0
            why = None
            if v5 and b.left():
                text = b.properties().get(REASON_STRING)
                why = text if isinstance(text, str) else None
            return Disconnect(reason, why)
        raise MqttWireError(f"packet type {kind} is not one a server sends a client")

    @staticmethod
    def _connack(body: bytes, v5: bool) -> ConnAck:
        b = _Body(body, "a CONNACK")
        flags = b.u8()
        if flags & 0xFE:
            raise MqttWireError(f"CONNACK flags 0x{flags:02x}: only bit 0 may be set (3.2.2.1)")
        reason = b.u8()
        if not v5 or not b.left():  # a v3 broker answers a v5 CONNECT in its own format
            return ConnAck(bool(flags), reason)
        props = b.properties()

        def num(pid: int) -> int | None:
            v = props.get(pid)
            return v if isinstance(v, int) else None

        def text(pid: int) -> str | None:
            v = props.get(pid)
            return v if isinstance(v, str) else None

        receive_max = num(RECEIVE_MAXIMUM)
        if receive_max == 0:
            raise MqttWireError("a CONNACK with Receive Maximum 0 (3.2.2.3.3)")
        return ConnAck(
            bool(flags),
            reason,
            receive_max,
            num(MAXIMUM_PACKET_SIZE),
            text(ASSIGNED_CLIENT_ID),
            text(REASON_STRING),
            num(SERVER_KEEP_ALIVE),
        )

    @staticmethod
    def _publish(flags: int, body: bytes, v5: bool) -> Publish:
        qos = flags >> 1 & 3
        if qos == 3:
            raise MqttWireError("a PUBLISH with QoS 3 (3.3.1.2)")
        if qos == 2:
            raise MqttWireError("a PUBLISH with QoS 2: this client subscribes at QoS 0 or 1")
        b = _Body(body, "a PUBLISH")
        topic = b.string()
        pid = b.u16() if qos else 0
        if qos and not pid:
            raise MqttWireError("a QoS 1 PUBLISH with packet identifier 0 (2.2.1)")
        if v5:
            b.properties()
        if not topic:
            raise MqttWireError("a PUBLISH without a topic name (no topic alias was allowed)")
        return Publish(topic, body[b.i :], qos, bool(flags & 1), bool(flags & 8), pid)
