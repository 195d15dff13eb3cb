"""The wire format between MicroPython sensor nodes and their gateway (pure: bytes in, values out).

Nodes talk MQTT 3.1.1 to the site's local broker, below their own prefix::

    cityedge/node/v1/{site}/{node}/up        reading frames, QoS 1
    cityedge/node/v1/{site}/{node}/status    status frames (retained; the will says "offline")
    cityedge/node/v1/{site}/{node}/cmd       signed commands to the node (protocols.signed)
    cityedge/node/v1/{site}/{node}/res       the node's replies to commands
    cityedge/node/v1/{site}/{node}/ota       signed OTA manifest (protocols.signed, purpose "ota")
    cityedge/node/v1/{site}/{node}/ota/data  the image, in chunks: u32 offset + bytes

Frames are small and binary (a node on a 64 KB heap should not build JSON). Big-endian::

    header   magic 0xCE | version 1 | type u8 | seq u16 | time u32 (Unix s; 0: clock not set)
    type 1   readings: count u8, then count x (point id u8, tag u8, value)
             tag 0 false, 1 true (no value bytes); 2 int16; 3 int32; 4 float32
    type 2   status: state u8 | firmware version u32 (major<<16 | minor<<8 | patch) | reason
             (UTF-8, the rest of the frame, at most 64 bytes)
    type 3   reply: nonce length u8 | nonce (ASCII) | result u8 (0 done, 1 refused, 2 failed)
             | message (UTF-8, the rest, at most 64 bytes)
    type 4   queued readings: boot u32 | then as type 1. A report from the node's flash queue,
             kept there until the gateway acknowledges it; (node, boot, seq) names it, so the
             gateway stores a resent one once
    type 5   acknowledgement, gateway to node on the node's ``cmd`` topic: boot u32 | count u8
             | count x seq u16: these reports of that boot are in the gateway's durable outbox
             (the header's seq is 0; signed commands never start with the magic byte)

Point ids name the point and its unit (:data:`POINTS`); the firmware keeps the same table
(``firmware/cenode/wire.py``) and both are checked against the golden vectors in
``protocols/vectors/nodewire.json``. Decoding refuses short frames, trailing bytes, unknown
types, point ids and tags with a :class:`~protocols.errors.DecodeError` that says which.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from protocols.errors import DecodeError, EncodeError, TopicError

MAGIC: Final = 0xCE
VERSION: Final = 1
HEADER: Final = struct.Struct(">BBBHI")
ROOT: Final = "cityedge/node/v1"
MAX_TEXT: Final = 64
MAX_READINGS: Final = 32

# id -> (point name, unit). Append only: ids are on the wire in the field.
POINTS: Final[dict[int, tuple[str, str | None]]] = {
    1: ("fill_pct", "%"),
    2: ("distance_mm", "mm"),
    3: ("temperature_c", "°C"),
    4: ("ph", "pH"),
    5: ("turbidity_ntu", "NTU"),
    6: ("door_open", None),
    7: ("relay_on", None),
    8: ("battery_v", "V"),
    9: ("rssi_dbm", "dBm"),
    10: ("uptime_s", "s"),
}
POINT_IDS: Final = {name: pid for pid, (name, _unit) in POINTS.items()}
# what each kind of node reports (the firmware's apps); the gateway's catalog uses it
KIND_POINTS: Final[dict[str, tuple[str, ...]]] = {
    "bin-fill": ("fill_pct", "distance_mm", "temperature_c"),
    "water": ("ph", "turbidity_ntu", "temperature_c"),
    "gate-relay": ("door_open", "relay_on"),
}
NODE_KINDS: Final = tuple(KIND_POINTS)

Value = bool | int | float


class FrameType(IntEnum):
    READINGS = 1
    STATUS = 2
    REPLY = 3
    QUEUED = 4
    ACK = 5


class NodeState(IntEnum):
    BOOT = 0
    HEALTHY = 1
    OFFLINE = 2  # the will: the broker publishes it when the node vanishes
    OTA_REFUSED = 3
    OTA_APPLIED = 4
    ROLLED_BACK = 5


class Result(IntEnum):
    DONE = 0
    REFUSED = 1
    FAILED = 2


class Tag(IntEnum):
    FALSE = 0
    TRUE = 1
    INT16 = 2
    INT32 = 3
    FLOAT32 = 4


@dataclass(frozen=True, slots=True)
class NodeReading:
    point: str
    value: Value
    unit: str | None


@dataclass(frozen=True, slots=True)
class ReadingsFrame:
    seq: int
    time: int
    readings: tuple[NodeReading, ...]
    boot: int | None = None  # set for a report from the node's flash queue (type 4)


@dataclass(frozen=True, slots=True)
class AckFrame:
    """The gateway has these reports of ``boot`` in its durable outbox."""

    seq: int  # of the header: 0
    time: int
    boot: int
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StatusFrame:
    seq: int
    time: int
    state: NodeState
    version: tuple[int, int, int]
    reason: str


@dataclass(frozen=True, slots=True)
class ReplyFrame:
    seq: int
    time: int
    nonce: str
    result: Result
    message: str


Frame = ReadingsFrame | StatusFrame | ReplyFrame | AckFrame
MAX_ACKS: Final = 255

# -- topics -----------------------------------------------------------------------------------

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CHANNELS: Final = ("up", "status", "cmd", "res", "ota", "ota/data")


def _level(what: str, value: str) -> str:
    if not _LEVEL.fullmatch(value):  # match() let "node\n" through (its $)
        raise TopicError(
            f"{what} {value!r} cannot be a topic level: use 1-64 letters, digits, '_', '.', '-'"
        )
    return value


def _channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise TopicError(f"no node channel {channel!r}; one of {', '.join(CHANNELS)}")
    return channel


def node_prefix(site: str, node: str) -> str:
    return f"{ROOT}/{_level('site', site)}/{_level('node', node)}"


def node_topic(site: str, node: str, channel: str) -> str:
    return f"{node_prefix(site, node)}/{_channel(channel)}"


def site_filter(site: str, channel: str) -> str:
    """``cityedge/node/v1/{site}/+/{channel}``: one channel of every node of ``site`` (what the
    gateway subscribes to, and a line of the site broker's ACL)."""
    return f"{ROOT}/{_level('site', site)}/+/{_channel(channel)}"


def parse_node_topic(topic: str) -> tuple[str, str, str]:
    """``(site, node, channel)`` of a node topic; :class:`TopicError` for anything else."""
    head = ROOT + "/"
    if not topic.startswith(head):
        raise TopicError(f"{topic!r} is not below {ROOT}/")
    parts = topic[len(head) :].split("/", 2)
    if len(parts) != 3 or parts[2] not in CHANNELS:
        raise TopicError(f"{topic!r}: expected {ROOT}/site/node/<{'|'.join(CHANNELS)}>")
    node_prefix(parts[0], parts[1])
    return parts[0], parts[1], parts[2]


# -- versions ---------------------------------------------------------------------------------


def pack_version(version: tuple[int, int, int]) -> int:
    major, minor, patch = version
    if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFF and 0 <= patch <= 0xFF):
        raise EncodeError(f"version {version}: major 0-65535, minor and patch 0-255")
    return major << 16 | minor << 8 | patch


def unpack_version(packed: int) -> tuple[int, int, int]:
    return packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; ValueError names what is wrong."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {text!r}: expected MAJOR.MINOR.PATCH, e.g. 1.4.0")
    major, minor, patch = (int(p) for p in parts)
    pack_version((major, minor, patch))
    return major, minor, patch


# -- encoding ---------------------------------------------------------------------------------


def _header(ftype: FrameType, seq: int, time: int) -> bytes:
    if not 0 <= seq <= 0xFFFF:
        raise EncodeError(f"seq {seq} does not fit u16")
    if not 0 <= time <= 0xFFFFFFFF:
        raise EncodeError(f"time {time} does not fit u32")
    return HEADER.pack(MAGIC, VERSION, ftype, seq, time)


def _text(text: str, what: str) -> bytes:
    data = text.encode()
    if len(data) > MAX_TEXT:
        raise EncodeError(f"{what} is {len(data)} bytes; at most {MAX_TEXT}")
    return data


def _value(value: Value) -> bytes:
    if isinstance(value, bool):
        return bytes((Tag.TRUE if value else Tag.FALSE,))
    if isinstance(value, int):
        if -0x8000 <= value <= 0x7FFF:
            return struct.pack(">Bh", Tag.INT16, value)
        if -0x80000000 <= value <= 0x7FFFFFFF:
            return struct.pack(">Bi", Tag.INT32, value)
        raise EncodeError(f"integer {value} does not fit int32")
    if not math.isfinite(value):
        raise EncodeError(f"value {value} is not finite")
    return struct.pack(">Bf", Tag.FLOAT32, value)


def _boot(boot: int) -> bytes:
    if not 0 <= boot <= 0xFFFFFFFF:
        raise EncodeError(f"boot {boot} does not fit u32")
    return struct.pack(">I", boot)


def encode_readings(
    seq: int, time: int, readings: Sequence[tuple[str, Value]], boot: int | None = None
) -> bytes:
    """Type 1, or type 4 (a queued report) when ``boot`` is given."""
    if not 1 <= len(readings) <= MAX_READINGS:
        raise EncodeError(f"a frame carries 1-{MAX_READINGS} readings, not {len(readings)}")
    if boot is None:
        out = bytearray(_header(FrameType.READINGS, seq, time))
    else:
        out = bytearray(_header(FrameType.QUEUED, seq, time) + _boot(boot))
    out.append(len(readings))
    for name, value in readings:
        pid = POINT_IDS.get(name)
        if pid is None:
            raise EncodeError(f"point {name!r} has no wire id; known: {', '.join(POINT_IDS)}")
        out.append(pid)
        out += _value(value)
    return bytes(out)


def encode_status(
    seq: int, time: int, state: NodeState, version: tuple[int, int, int], reason: str = ""
) -> bytes:
    return (
        _header(FrameType.STATUS, seq, time)
        + struct.pack(">BI", state, pack_version(version))
        + _text(reason, "reason")
    )


def encode_reply(seq: int, time: int, nonce: str, result: Result, message: str = "") -> bytes:
    n = nonce.encode("ascii")
    if len(n) > MAX_TEXT:
        raise EncodeError(f"nonce is {len(n)} bytes; at most {MAX_TEXT}")
    return (
        _header(FrameType.REPLY, seq, time)
        + bytes((len(n),))
        + n
        + bytes((result,))
        + _text(message, "message")
    )


def encode_ack(boot: int, seqs: Sequence[int], time: int = 0) -> bytes:
    """An acknowledgement of reports ``seqs`` of ``boot`` (1-255 of them)."""
    if not 1 <= len(seqs) <= MAX_ACKS:
        raise EncodeError(f"an acknowledgement carries 1-{MAX_ACKS} seqs, not {len(seqs)}")
    if not all(0 <= s <= 0xFFFF for s in seqs):
        raise EncodeError("every seq must fit u16")
    return (
        _header(FrameType.ACK, 0, time)
        + _boot(boot)
        + bytes((len(seqs),))
        + struct.pack(f">{len(seqs)}H", *seqs)
    )


# -- decoding ---------------------------------------------------------------------------------


def _need(data: bytes, at: int, n: int, what: str) -> None:
    if len(data) < at + n:
        raise DecodeError(f"frame ends at byte {len(data)} inside {what} (needs {at + n})")


def _decode_text(data: bytes, what: str) -> str:
    if len(data) > MAX_TEXT:
        raise DecodeError(f"{what} is {len(data)} bytes; at most {MAX_TEXT}")
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise DecodeError(f"{what} is not UTF-8") from err


def decode(data: bytes) -> Frame:
    """One frame; every malformation is a :class:`DecodeError` naming the byte and the field."""
    _need(data, 0, HEADER.size, "the header")
    magic, version, ftype, seq, time = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"byte 0 is 0x{magic:02x}, not the magic 0xce: not a node frame")
    if version != VERSION:
        raise DecodeError(f"frame version {version}; this gateway reads version {VERSION}")
    at = HEADER.size
    boot: int | None = None
    if ftype == FrameType.QUEUED:
        _need(data, at, 4, "the boot")
        boot = struct.unpack_from(">I", data, at)[0]
        at += 4
    if ftype in (FrameType.READINGS, FrameType.QUEUED):
        _need(data, at, 1, "the reading count")
        count = data[at]
        at += 1
        if not 1 <= count <= MAX_READINGS:
            raise DecodeError(f"reading count {count}; expected 1-{MAX_READINGS}")
        readings = []
        for i in range(count):
            _need(data, at, 2, f"reading {i}")
            pid, tag = data[at], data[at + 1]
            at += 2
            if pid not in POINTS:
                raise DecodeError(f"reading {i}: unknown point id {pid}")
            name, unit = POINTS[pid]
            value: Value
            if tag in (Tag.FALSE, Tag.TRUE):
                value = tag == Tag.TRUE
            elif tag == Tag.INT16:
                _need(data, at, 2, f"reading {i} value")
                value = struct.unpack_from(">h", data, at)[0]
                at += 2
            elif tag == Tag.INT32:
                _need(data, at, 4, f"reading {i} value")
                value = struct.unpack_from(">i", data, at)[0]
                at += 4
            elif tag == Tag.FLOAT32:
                _need(data, at, 4, f"reading {i} value")
                value = struct.unpack_from(">f", data, at)[0]
                at += 4
                if not math.isfinite(value):
                    raise DecodeError(f"reading {i} ({name}) is not a finite number")
            else:
                raise DecodeError(f"reading {i}: unknown value tag {tag}")
            readings.append(NodeReading(name, value, unit))
        if at != len(data):
            raise DecodeError(f"{len(data) - at} bytes after the last reading")
        return ReadingsFrame(seq, time, tuple(readings), boot)
    if ftype == FrameType.ACK:
        _need(data, at, 5, "the boot and count")
        boot, count = struct.unpack_from(">IB", data, at)
        at += 5
        if count == 0 or len(data) != at + 2 * count:
            raise DecodeError(f"{len(data) - at} bytes of seqs for a count of {count}")
        return AckFrame(seq, time, boot, struct.unpack_from(f">{count}H", data, at))
    if ftype == FrameType.STATUS:
        _need(data, at, 5, "the status")
        state, packed = struct.unpack_from(">BI", data, at)
        try:
            node_state = NodeState(state)
        except ValueError as err:
            raise DecodeError(f"unknown node state {state}") from err
        reason = _decode_text(data[at + 5 :], "reason")
        return StatusFrame(seq, time, node_state, unpack_version(packed), reason)
    if ftype == FrameType.REPLY:
        _need(data, at, 1, "the nonce length")
        n = data[at]
        _need(data, at + 1, n + 1, "the nonce and result")
        try:
            nonce = data[at + 1 : at + 1 + n].decode("ascii")
        except UnicodeDecodeError as err:
            raise DecodeError("nonce is not ASCII") from err
        code = data[at + 1 + n]
        try:
            result = Result(code)
        except ValueError as err:
            raise DecodeError(f"unknown reply result {code}") from err
        message = _decode_text(data[at + 2 + n :], "message")
        return ReplyFrame(seq, time, nonce, result, message)
    raise DecodeError(f"unknown frame type {ftype}")


def encode(frame: Frame) -> bytes:
    """The bytes of a decoded frame (for round trips and tests)."""
    if isinstance(frame, ReadingsFrame):
        readings = [(r.point, r.value) for r in frame.readings]
        return encode_readings(frame.seq, frame.time, readings, frame.boot)
    if isinstance(frame, AckFrame):
        return encode_ack(frame.boot, frame.seqs, frame.time)
    if isinstance(frame, StatusFrame):
        return encode_status(frame.seq, frame.time, frame.state, frame.version, frame.reason)
    return encode_reply(frame.seq, frame.time, frame.nonce, frame.result, frame.message)
