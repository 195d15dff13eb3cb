"""HJ 212-2017 frames: the data link between an environmental monitoring station ("field
machine", 现场机) and the bureau's platform ("upper machine", 上位机). Sans-IO: bytes in, typed
packets out; ``encode()`` returns bytes.

A frame (HJ 212-2017 6.3.1)::

    ##  LLLL  <data segment, LLLL ASCII characters, 0..1024>  CCCC  \\r\\n
    head len  QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;[PNUM=..;PNO=..;]CP=&&..&&  CRC  tail

- ``LLLL`` is the data segment's length in decimal, zero padded;
- ``CCCC`` is the CRC of the data segment only, four hex digits (appendix A: register 0xFFFF;
  per byte ``crc = (crc >> 8) ^ byte`` then eight shifts with 0xA001 on a carried-out 1 — note
  the ``>> 8``: this is *not* CRC-16/MODBUS, which XORs the byte into the low half). Platforms
  emit upper- or lower-case hex; both are accepted, upper case is sent.
- Flag (6.3.3, table 4) is ``V5 V4 V3 V2 V1 V0 D A``: A=1 the receiver must answer, D=1 the
  message is split and PNUM/PNO follow; V=000001 is HJ 212-2017 (so plain 2017 frames carry
  Flag=4, or 5 when an answer is wanted), V=000000 is HJ/T 212-2005.
- CP (6.3.3) holds groups separated by ``;``, items by ``,``, each ``key=value``; a pollutant's
  item key is ``<code>-<field>`` (``w01018-Rtd``), with fields such as Rtd (real-time), Min, Avg,
  Max, Cou (cumulative) and Flag (data flag, table 7: N normal, F stopped, M maintenance,
  S manual, D fault, C calibration, T over range, B communication fault).

Where HJ 212-2025 (in force since 2026-01-01, replacing 2017) differs, as far as public
sources tell — the standard itself is sold, not published; what follows comes from public
implementations that cite it, and is not implemented here:

- the frame, the length field and the CRC algorithm are unchanged (implementations of 2025
  keep the same "ANSI CRC16" and ``##LLLL...CCCC\\r\\n``);
- its appendix A adds *data segment encryption*: the CRC is computed and the frame built
  first, then the data segment is encrypted in 16-character groups without padding, a shorter
  tail left in plain text, encrypted bytes rendered as ``{0xE4,0x3E,...}`` inside the segment;
- its appendix H adds multimedia upload over HTTPS with an SM4-ECB/PKCS7/Base64
  ``Authorization`` of ``user:password``;
- the title and scope widen to "pollutant automatic monitoring and surveillance systems" and
  the communication between field instruments and the data acquisition unit.
A 2025 platform that requires encryption would need a cipher configured on both ends; this
codec would refuse such frames' segments as malformed (a ``{`` inside CP), never mis-read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum
from typing import Final

from protocols.errors import DecodeError, EncodeError

HEAD: Final = b"##"
TAIL: Final = b"\r\n"
#: Largest data segment (6.3.1, table 2): 1024 characters.
MAX_SEGMENT: Final = 1024
#: Largest CP field including ``CP=&&`` and ``&&`` (6.3.3, table 3): 950 characters.
MAX_CP: Final = 950
_OVERHEAD: Final = len(HEAD) + 4 + 4 + len(TAIL)


class Hj212Error(DecodeError):
    """Bytes that are not a valid HJ 212 frame. ``qn_rtn`` is the request-answer code
    (table 9) a platform would send back for it, when one fits."""

    def __init__(self, message: str, qn_rtn: int = 100) -> None:
        super().__init__(message)
        self.qn_rtn = qn_rtn


class Flag:
    """The low bits of Flag (table 4); the version sits above them (``flag >> 2``)."""

    ACK: Final = 1  # A: the receiver must answer
    SPLIT: Final = 2  # D: split message, PNUM and PNO present


VERSION_2005: Final = 0
VERSION_2017: Final = 1


def make_flag(*, ack: bool = False, split: bool = False, version: int = VERSION_2017) -> int:
    return (version << 2) | (Flag.SPLIT if split else 0) | (Flag.ACK if ack else 0)


class St(IntEnum):
    """System codes (table 5), the ones a city gateway sends."""

    SURFACE_WATER = 21  # 地表水质量监测
    AIR_QUALITY = 22  # 空气质量监测
    NOISE = 23  # 声环境质量监测
    AIR_POLLUTION_SOURCE = 31  # 大气环境污染源
    WATER_POLLUTION_SOURCE = 32  # 地表水体环境污染源
    SYSTEM = 91  # 系统交互


class Cn(IntEnum):
    """Command codes (table 6) that this codec's users send or answer."""

    SET_TIMEOUT_RESEND = 1000  # platform sets OverTime and ReCount
    GET_TIME = 1011
    SET_TIME = 1012
    GET_RTD_INTERVAL = 1061
    SET_RTD_INTERVAL = 1062
    REALTIME_DATA = 2011  # 实时数据
    STOP_REALTIME = 2012
    DAY_DATA = 2031  # 日历史数据
    MINUTE_DATA = 2051  # 分钟数据
    HOUR_DATA = 2061  # 小时数据
    REQUEST_ANSWER = 9011  # 请求应答 (QnRtn)
    EXECUTE_RESULT = 9012  # 执行结果 (ExeRtn)
    NOTIFY_ANSWER = 9013  # 通知应答
    DATA_ANSWER = 9014  # 数据应答


#: QnRtn (table 9): the answer to a request.
QN_RTN: Final[dict[int, str]] = {
    1: "ready to execute",
    2: "request refused",
    3: "wrong password (PW)",
    4: "wrong station id (MN)",
    5: "wrong system code (ST)",
    6: "wrong Flag",
    7: "wrong request code (QN)",
    8: "wrong command code (CN)",
    9: "CRC check failed",
    100: "unknown error",
}
#: ExeRtn (table 10): the result of executing a request.
EXE_RTN: Final[dict[int, str]] = {
    1: "done",
    2: "failed, reason unknown",
    3: "request conditions wrong",
    4: "communication timeout",
    5: "busy",
    6: "system fault",
    100: "no data",
}
#: Data flags (table 7).
DATA_FLAGS: Final[dict[str, str]] = {
    "N": "normal",
    "F": "stopped",
    "M": "maintenance",
    "S": "manual value",
    "D": "fault",
    "C": "calibration",
    "T": "over measuring range",
    "B": "communication fault",
}

#: Pollutant codes (appendix B) for the quantities the shipped profiles measure.
POLLUTANT_CODES: Final[dict[str, str]] = {
    # surface water (B.1)
    "water_temperature": "w01010",
    "ph": "w01001",
    "turbidity": "w01003",
    "dissolved_oxygen": "w01009",
    "conductivity": "w01014",
    "codmn": "w01019",
    "ammonia_nitrogen": "w21003",
    "total_phosphorus": "w21011",
    "total_nitrogen": "w21001",
    # ambient air (B.2)
    "pm2_5": "a34004",
    "pm10": "a34002",
    "so2": "a21026",
    "no2": "a21004",
    "o3": "a05024",
    "co": "a21005",
    "air_temperature": "a01001",
    "humidity": "a01002",
    "pressure": "a01006",
    "wind_speed": "a01007",
    "wind_direction": "a01008",
}

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FORBIDDEN_VALUE = frozenset(";,=&\r\n")


def crc16(data: bytes) -> int:
    """HJ 212 appendix A CRC of ``data`` (the data segment only)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            carry = crc & 1
            crc >>= 1
            if carry:
                crc ^= 0xA001
    return crc


@dataclass(frozen=True, slots=True)
class Cp:
    """The CP field: groups of ``key=value`` items, in order.

    ``Cp.of(DataTime="20160801085857", ...)`` and :meth:`with_pollutants` build one;
    :meth:`get` and :meth:`pollutants` read one.
    """

    groups: tuple[tuple[tuple[str, str], ...], ...] = ()

    @classmethod
    def of(cls, **items: str) -> Cp:
        return cls(tuple(((k, v),) for k, v in items.items()))

    def with_pollutants(self, values: Mapping[str, Mapping[str, str]]) -> Cp:
        """Append one group per pollutant code: ``code-Field=value`` items."""
        extra = tuple(
            tuple((f"{code}-{f}", v) for f, v in fields.items()) for code, fields in values.items()
        )
        return Cp(self.groups + extra)

    def items(self) -> Iterator[tuple[str, str]]:
        for group in self.groups:
            yield from group

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.items() if k == key), None)

    def pollutants(self) -> dict[str, dict[str, str]]:
        """``{code: {field: value}}`` for every ``code-Field`` item."""
        out: dict[str, dict[str, str]] = {}
        for k, v in self.items():
            code, dash, fld = k.rpartition("-")
            if dash and code:
                out.setdefault(code, {})[fld] = v
        return out

    def encode(self) -> str:
        return ";".join(",".join(f"{k}={v}" for k, v in g) for g in self.groups)

    @classmethod
    def decode(cls, text: str) -> Cp:
        """Parse the text between ``CP=&&`` and ``&&``. Empty groups (a trailing ``;``) are
        skipped, as some stations send them."""
        groups = []
        for raw_group in text.split(";"):
            if not raw_group:
                continue
            items = []
            for raw in raw_group.split(","):
                key, eq, value = raw.partition("=")
                if not eq or not _KEY.match(key):
                    raise Hj212Error(f"CP item {raw!r} is not key=value")
                items.append((key, value))
            groups.append(tuple(items))
        return cls(tuple(groups))

    def check(self) -> None:
        for k, v in self.items():
            if not _KEY.match(k):
                raise EncodeError(f"CP key {k!r} must be letters, digits, '_' and '-'")
            if _FORBIDDEN_VALUE & set(v):
                raise EncodeError(f"CP value {v!r} of {k} holds one of ; , = & or a line break")


@dataclass(frozen=True, slots=True)
class Packet:
    """One data segment. ``qn`` (request id, ``YYYYMMDDhhmmsszzz``) and ``flag`` may be absent
    on HJ/T 212-2005 frames; ``pnum``/``pno`` are present exactly when Flag's D bit is set."""

    st: int
    cn: int
    pw: str
    mn: str
    cp: Cp = field(default_factory=Cp)
    qn: str | None = None
    flag: int | None = make_flag()
    pnum: int | None = None
    pno: int | None = None

    @property
    def wants_ack(self) -> bool:
        return self.flag is not None and bool(self.flag & Flag.ACK)

    @property
    def is_split(self) -> bool:
        return self.flag is not None and bool(self.flag & Flag.SPLIT)

    @property
    def version(self) -> int | None:
        return None if self.flag is None else self.flag >> 2

    def segment(self) -> str:
        """The data segment text (checked: raises :class:`EncodeError`)."""
        _check_fields(self)
        parts = []
        if self.qn is not None:
            parts.append(f"QN={self.qn}")
        parts += [f"ST={self.st:02d}", f"CN={self.cn:04d}", f"PW={self.pw}", f"MN={self.mn}"]
        if self.flag is not None:
            parts.append(f"Flag={self.flag}")
        if self.pnum is not None and self.pno is not None:
            parts += [f"PNUM={self.pnum}", f"PNO={self.pno}"]
        cp = f"CP=&&{self.cp.encode()}&&"
        if len(cp) > MAX_CP:
            raise EncodeError(
                f"CP is {len(cp)} characters; the limit is {MAX_CP}: split the message"
            )
        return ";".join([*parts, cp])

    def encode(self) -> bytes:
        """The whole frame: head, length, segment, CRC, tail."""
        seg = self.segment().encode("ascii")
        if len(seg) > MAX_SEGMENT:
            raise EncodeError(
                f"data segment is {len(seg)} characters; the limit is {MAX_SEGMENT}: split it"
            )
        return b"%s%04d%s%04X%s" % (HEAD, len(seg), seg, crc16(seg), TAIL)


def _check_fields(p: Packet) -> None:
    if p.qn is not None and not re.fullmatch(r"\d{17}", p.qn):
        raise EncodeError(f"QN {p.qn!r} must be 17 digits, YYYYMMDDhhmmsszzz")
    if not 0 <= p.st <= 99 or not 0 <= p.cn <= 9999:
        raise EncodeError(f"ST {p.st} must be 0-99 and CN {p.cn} 0-9999")
    if not re.fullmatch(r"[A-Za-z0-9]{1,6}", p.pw):
        raise EncodeError("PW must be 1-6 letters or digits")
    if not re.fullmatch(r"[A-Za-z0-9]{1,24}", p.mn):
        raise EncodeError(f"MN {p.mn!r} must be 1-24 letters or digits")
    if p.flag is not None and not 0 <= p.flag <= 255:
        raise EncodeError(f"Flag {p.flag} must be 0-255")
    if p.is_split != (p.pnum is not None and p.pno is not None):
        raise EncodeError("PNUM and PNO go with Flag's D bit, and only with it")
    if p.pnum is not None and p.pno is not None and not 1 <= p.pno <= p.pnum <= 9999:
        raise EncodeError(f"need 1 <= PNO ({p.pno}) <= PNUM ({p.pnum}) <= 9999")
    p.cp.check()


_HEADER_KEYS: Final = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_DIGITS: Final = {"QN": 17, "ST": 2, "CN": 4}


def decode_segment(segment: bytes | str) -> Packet:
    """Parse a data segment (without head, length, CRC and tail)."""
    try:
        text = segment if isinstance(segment, str) else segment.decode("ascii")
    except UnicodeDecodeError as err:
        raise Hj212Error(f"data segment has a non-ASCII byte at {err.start}") from err
    head, sep, rest = text.partition("CP=&&")
    if not sep:
        raise Hj212Error("data segment has no CP=&&...&& field")
    if not rest.endswith("&&"):
        raise Hj212Error("CP field does not end with &&")
    if head and not head.endswith(";"):
        raise Hj212Error("CP must follow a ';'")
    fields: dict[str, str] = {}
    for item in head[:-1].split(";") if head else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _HEADER_KEYS:
            raise Hj212Error(f"unknown data segment field {item!r}", qn_rtn=100)
        if key in fields:
            raise Hj212Error(f"field {key} appears twice")
        fields[key] = value.strip()
    for key, qn_rtn in (("ST", 5), ("CN", 8), ("PW", 3), ("MN", 4)):
        if key not in fields:
            raise Hj212Error(f"data segment has no {key}", qn_rtn=qn_rtn)
    for key, n in _DIGITS.items():
        if key in fields and not (len(fields[key]) == n and fields[key].isdigit()):
            code = {"QN": 7, "ST": 5, "CN": 8}[key]
            raise Hj212Error(f"{key}={fields[key]!r} must be {n} digits", qn_rtn=code)
    flag = None
    if "Flag" in fields:
        if not fields["Flag"].isdigit() or int(fields["Flag"]) > 255:
            raise Hj212Error(f"Flag={fields['Flag']!r} must be 0-255", qn_rtn=6)
        flag = int(fields["Flag"])
    pnum = pno = None
    if "PNUM" in fields or "PNO" in fields:
        try:
            pnum, pno = int(fields["PNUM"]), int(fields["PNO"])
        except (KeyError, ValueError) as err:
            raise Hj212Error("PNUM and PNO must both be numbers", qn_rtn=6) from err
        if not 1 <= pno <= pnum <= 9999:
            raise Hj212Error(f"need 1 <= PNO ({pno}) <= PNUM ({pnum}) <= 9999", qn_rtn=6)
    split = flag is not None and bool(flag & Flag.SPLIT)
    if split != (pnum is not None):
        raise Hj212Error("PNUM/PNO must be present exactly when Flag's D bit is set", qn_rtn=6)
    if "&&" in rest[:-2]:
        raise Hj212Error("CP holds '&&' before its end")
    return Packet(
        st=int(fields["ST"]),
        cn=int(fields["CN"]),
        pw=fields["PW"],
        mn=fields["MN"],
        cp=Cp.decode(rest[:-2]),
        qn=fields.get("QN"),
        flag=flag,
        pnum=pnum,
        pno=pno,
    )


def decode_frame(frame: bytes) -> Packet:
    """Exactly one frame, from ``##`` to ``\\r\\n``; :class:`Hj212Error` says what is wrong."""
    if not frame.startswith(HEAD):
        raise Hj212Error("frame does not start with ##")
    length = _length(frame[2:6])
    if len(frame) != _OVERHEAD + length:
        raise Hj212Error(f"frame is {len(frame)} bytes; its length field says {_OVERHEAD + length}")
    if frame[-2:] != TAIL:
        raise Hj212Error("frame does not end with \\r\\n")
    segment = frame[6 : 6 + length]
    crc_text = frame[6 + length : 10 + length]
    if not re.fullmatch(rb"[0-9A-Fa-f]{4}", crc_text):
        raise Hj212Error(f"CRC {crc_text!r} is not four hex digits", qn_rtn=9)
    sent = int(crc_text, 16)
    if sent != crc16(segment):
        raise Hj212Error(
            f"CRC {sent:04X} does not match the segment's {crc16(segment):04X}", qn_rtn=9
        )
    return decode_segment(segment)


def _length(field_bytes: bytes) -> int:
    if len(field_bytes) != 4 or not field_bytes.isdigit():
        raise Hj212Error(f"length field {field_bytes!r} is not four decimal digits")
    length = int(field_bytes)
    if length > MAX_SEGMENT:
        raise Hj212Error(f"length {length} exceeds the {MAX_SEGMENT}-character limit")
    return length


@dataclass(frozen=True, slots=True)
class BadFrame:
    """What the reader skipped and why (the stream goes on after it)."""

    error: Hj212Error
    skipped: bytes


class FrameReader:
    """Frames from a byte stream (TCP delivers frames cut and glued anyhow).

    ``feed(data)`` then iterate ``events()``: each item is a :class:`Packet` or a
    :class:`BadFrame`. After garbage or a broken frame the reader resynchronises at the next
    ``##``. The buffer never holds more than one maximal frame plus what was fed last.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def events(self) -> Iterator[Packet | BadFrame]:
        while True:
            event = self._next()
            if event is None:
                return
            yield event

    def _next(self) -> Packet | BadFrame | None:
        buf = self._buf
        start = buf.find(HEAD)
        if start < 0:
            # keep a trailing '#' that may begin the next head
            keep = 1 if buf.endswith(b"#") else 0
            if len(buf) > keep:
                skipped = bytes(buf[: len(buf) - keep])
                del buf[: len(buf) - keep]
                return BadFrame(Hj212Error("bytes outside a frame"), skipped)
            return None
        while buf[start + 2 : start + 3] == b"#":
            start += 1  # in a run of '#', the head is the last two
        if start > 0:
            skipped = bytes(buf[:start])
            del buf[:start]
            return BadFrame(Hj212Error("bytes outside a frame"), skipped)
        if len(buf) < 6:
            return None
        try:
            length = _length(bytes(buf[2:6]))
        except Hj212Error as err:
            return self._skip(2, err)
        total = _OVERHEAD + length
        if len(buf) < total:
            nxt = buf.find(HEAD, 2)
            if nxt >= 0 and buf.find(TAIL, 2, nxt) >= 0:
                # a new head after a line end: this frame was cut short
                return self._skip(nxt, Hj212Error("frame shorter than its length field"))
            return None
        frame = bytes(buf[:total])
        try:
            packet = decode_frame(frame)
        except Hj212Error as err:
            return self._skip(2, err)
        del buf[:total]
        return packet

    def _skip(self, n: int, err: Hj212Error) -> BadFrame:
        nxt = self._buf.find(HEAD, n)
        cut = nxt if nxt >= 0 else len(self._buf)
        skipped = bytes(self._buf[:cut])
        del self._buf[:cut]
        return BadFrame(err, skipped)


def new_qn(when: datetime) -> str:
    """QN for ``when``: ``YYYYMMDDhhmmsszzz`` (local time of the station, to the millisecond)."""
    return when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond // 1000:03d}"


def data_time(when: datetime) -> str:
    """DataTime (``YYYYMMDDhhmmss``)."""
    return when.strftime("%Y%m%d%H%M%S")


def format_value(value: float, decimals: int = 3) -> str:
    """A measured value as HJ 212 sends it: plain decimal, no exponent, trailing zeros cut."""
    if value != value or value in (float("inf"), float("-inf")):
        raise EncodeError(f"{value} cannot be sent")
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def split(packet: Packet, max_segment: int = MAX_SEGMENT) -> list[Packet]:
    """Split ``packet`` so each data segment fits ``max_segment`` (and CP fits 950).

    Groups are never cut. Groups before the first pollutant group (DataTime) are repeated in
    every part so each part can be read alone. A packet that fits is returned as is.
    """
    try:
        if len(packet.segment()) <= max_segment:
            return [packet]
    except EncodeError:
        pass  # too long for one CP: split below
    groups = packet.cp.groups
    lead_n = next((i for i, g in enumerate(groups) if any("-" in k for k, _ in g)), len(groups))
    lead, body = groups[:lead_n], groups[lead_n:]
    parts: list[list[tuple[tuple[str, str], ...]]] = []
    current: list[tuple[tuple[str, str], ...]] = []
    n_max = max(len(body), 1)  # the widest PNUM/PNO the parts can carry
    probe = replace(packet, flag=(packet.flag or 0) | Flag.SPLIT, pnum=n_max, pno=n_max)
    for g in body:
        trial = replace(probe, cp=Cp(lead + tuple(current) + (g,)))
        if current and not _fits(trial, max_segment):
            parts.append(current)
            current = []
        if not _fits(replace(probe, cp=Cp((*lead, g))), max_segment):
            raise EncodeError(f"one CP group alone does not fit {max_segment} characters")
        current.append(g)
    if current or not parts:
        parts.append(current)
    n = len(parts)
    flag = (packet.flag if packet.flag is not None else make_flag()) | Flag.SPLIT
    return [
        replace(packet, cp=Cp(lead + tuple(p)), flag=flag, pnum=n, pno=i + 1)
        for i, p in enumerate(parts)
    ]


def _fits(p: Packet, max_segment: int) -> bool:
    try:
        return len(p.segment()) <= max_segment
    except EncodeError:
        return False


class Reassembler:
    """Joins split packets back into one (keyed by MN, CN and QN). ``max_pending`` bounds the
    messages waiting for their other parts; the oldest incomplete one is dropped first."""

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._parts: dict[tuple[str, int, str | None], dict[int, Packet]] = {}
        self.dropped = 0

    def add(self, packet: Packet) -> Packet | None:
        """The whole message once every part arrived; None while parts are missing."""
        if not packet.is_split or packet.pnum is None or packet.pno is None:
            return packet
        key = (packet.mn, packet.cn, packet.qn)
        parts = self._parts.setdefault(key, {})
        parts[packet.pno] = packet
        if len(parts) < packet.pnum:
            while len(self._parts) > self.max_pending:
                self._parts.pop(next(iter(self._parts)))
                self.dropped += 1
            return None
        del self._parts[key]
        ordered = [parts[i] for i in sorted(parts)]
        first = ordered[0]
        lead_n = next(
            (i for i, g in enumerate(first.cp.groups) if any("-" in k for k, _ in g)),
            len(first.cp.groups),
        )
        lead = first.cp.groups[:lead_n]
        body = tuple(g for p in ordered for g in p.cp.groups[lead_n:])
        flag = None if first.flag is None else first.flag & ~Flag.SPLIT
        return replace(first, cp=Cp(lead + body), flag=flag, pnum=None, pno=None)


def answer(request: Packet, cn: Cn, cp: Cp | None = None) -> Packet:
    """A system answer (ST=91, Flag=4: version 2017, no answer wanted) to ``request``, with its
    QN, PW and MN, as the examples of appendix C show."""
    return Packet(
        st=St.SYSTEM,
        cn=cn,
        pw=request.pw,
        mn=request.mn,
        cp=cp or Cp(),
        qn=request.qn,
        flag=make_flag(),
    )


def data_answer(request: Packet) -> Packet:
    """CN 9014: the platform received a data message (CP empty)."""
    return answer(request, Cn.DATA_ANSWER)


def request_answer(request: Packet, qn_rtn: int) -> Packet:
    """CN 9011 with QnRtn (table 9)."""
    return answer(request, Cn.REQUEST_ANSWER, Cp.of(QnRtn=str(qn_rtn)))


def execute_result(request: Packet, exe_rtn: int) -> Packet:
    """CN 9012 with ExeRtn (table 10)."""
    return answer(request, Cn.EXECUTE_RESULT, Cp.of(ExeRtn=str(exe_rtn)))


def data_packet(
    *,
    cn: int,
    st: int,
    mn: str,
    pw: str,
    qn: str,
    when: datetime,
    values: Mapping[str, Mapping[str, str]],
    ack: bool = True,
) -> Packet:
    """A data upload (2011 real-time, 2051 minute, 2061 hour, 2031 day) for ``values``:
    ``{code: {"Avg": "7.4", "Flag": "N", ...}}``."""
    return Packet(
        st=st,
        cn=cn,
        pw=pw,
        mn=mn,
        qn=qn,
        flag=make_flag(ack=ack),
        cp=Cp.of(DataTime=data_time(when)).with_pollutants(values),
    )


def frames(packets: Iterable[Packet]) -> bytes:
    return b"".join(p.encode() for p in packets)


def describe(packet: Packet) -> str:
    """One line for logs: CN, QN, MN and the part number if split."""
    part = f" part {packet.pno}/{packet.pnum}" if packet.is_split else ""
    return f"CN={packet.cn} QN={packet.qn} MN={packet.mn}{part}"
