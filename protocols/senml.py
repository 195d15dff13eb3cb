"""SenML (RFC 8428): sensor measurement lists in JSON or CBOR, resolved to plain records.

A pack is an array of records. Base fields (``bn`` name, ``bt`` time, ``bu`` unit, ``bv``
value, ``bs`` sum, ``bver``) apply to the record they are in and to every later one until
changed (4.1). Resolving (4.6) gives each record its full name (``bn + n``), its time
(``bt + t``; below 2**28 it is relative to "now", 4.5.3), unit (``u`` else ``bu``) and value
(``bv + v``; or ``vb``, ``vs``, ``vd``).

CBOR uses integer labels for the fields (6, table 6): bver -1, bn -2, bt -3, bu -4, bv -5,
bs -6, n 0, u 1, v 2, vs 3, vb 4, s 5, t 6, ut 7, vd 8.

Content-Formats (12.3): 110 ``application/senml+json``, 112 ``application/senml+cbor``.

Outside input: a payload larger than :data:`MAX_PACK_BYTES` or nested deeper than a pack can be
is refused before it is parsed; numbers must be finite, also after ``bv + v``, ``bt + t`` and
``bs + s``; names, units and string values must be strings that UTF-8 can carry; ``vd`` is
base64url in JSON (4.3, without padding) and a byte string in CBOR. Every refusal is a
:class:`SenmlError`, whatever the bytes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from protocols.errors import DecodeError, EncodeError
from protocols.limits import check_json_depth, check_size, shown

CF_SENML_JSON: Final = 110
CF_SENML_CBOR: Final = 112
CF_JSON: Final = 50
CF_CBOR: Final = 60
CF_TEXT: Final = 0

#: CBOR integer labels (RFC 8428 table 6)
CBOR_LABELS: Final[dict[int, str]] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}
_LABEL_OF: Final = {v: k for k, v in CBOR_LABELS.items()}
RELATIVE_TIME_LIMIT: Final = 2**28  # 4.5.3: smaller resolved times are relative to now
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")  # 4.5.1
#: Largest payload decoded (a pack of some thousands of records; block-wise CoAP delivers more).
MAX_PACK_BYTES: Final = 1024 * 1024
#: A pack is an array of maps of scalars: anything nested deeper is refused before parsing.
MAX_DEPTH: Final = 4
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")

Value = float | bool | str | bytes


@dataclass(frozen=True, slots=True)
class Record:
    """One resolved measurement. ``time`` is absolute Unix seconds, or None when the pack gave
    none (it means "now"); relative times are made absolute with the ``now`` given to
    :func:`resolve`."""

    name: str
    value: Value | None
    unit: str | None = None
    time: float | None = None
    sum: float | None = None


class SenmlError(DecodeError):
    """A payload that is not a valid SenML pack (the message says which record and why)."""


def _num(x: object, what: str, i: int) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise SenmlError(f"record {i}: {what} must be a finite number (got {shown(x)})")
    try:
        value = float(x)
    except OverflowError:  # an integer beyond float range (JSON and CBOR bignums allow it)
        value = math.inf
    if not math.isfinite(value):
        raise SenmlError(f"record {i}: {what} must be a finite number (got {shown(x)})")
    return value


def _sum(a: float, b: float, what: str, i: int) -> float:
    """``a + b`` of two finite numbers, refused when it overflows (1e308 + 1e308)."""
    total = a + b
    if not math.isfinite(total):
        raise SenmlError(f"record {i}: {what} overflows ({a!r} + {b!r})")
    return total


def _text(x: object, what: str, i: int) -> str:
    """A string field: a ``str`` that UTF-8 can carry (no lone surrogates from JSON escapes)."""
    if not isinstance(x, str):
        raise SenmlError(f"record {i}: {what} must be a string (got {shown(x)})")
    try:
        x.encode("utf-8")
    except UnicodeEncodeError:
        raise SenmlError(f"record {i}: {what} is not valid Unicode (a lone surrogate)") from None
    return x


def _data(x: object, i: int) -> bytes:
    if not isinstance(x, bytes):
        raise SenmlError(f"record {i}: vd must be a byte string (got {shown(x)})")
    return x


def resolve(pack: Sequence[Mapping[str, Any]], now: float | None = None) -> list[Record]:
    """Resolved records (RFC 8428 4.6) of a decoded pack (records with string keys; ``vd``
    already bytes)."""
    if not isinstance(pack, Sequence) or isinstance(pack, str | bytes):
        raise SenmlError("a SenML pack is an array of records")
    bn, bt, bu, bv, bs = "", 0.0, None, 0.0, None
    out: list[Record] = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, Mapping):
            raise SenmlError(f"record {i} is not an object/map")
        unknown = [k for k in rec if k not in _LABEL_OF]
        if unknown:  # names ending in '_' must be understood (4.4): refusing them is required
            kind = "must-understand" if str(unknown[0]).endswith("_") else "unknown"
            raise SenmlError(f"record {i}: {kind} field {shown(unknown[0])} is not supported")
        if "bver" in rec and (
            isinstance(rec["bver"], bool) or not isinstance(rec["bver"], int) or rec["bver"] > 10
        ):
            raise SenmlError(f"record {i}: unsupported SenML version {shown(rec['bver'])}")
        if "bn" in rec:
            bn = _text(rec["bn"], "bn", i)
        if "bt" in rec:
            bt = _num(rec["bt"], "bt", i)
        if "bu" in rec:
            bu = _text(rec["bu"], "bu", i)
        if "bv" in rec:
            bv = _num(rec["bv"], "bv", i)
        if "bs" in rec:
            bs = _num(rec["bs"], "bs", i)
        values = [k for k in ("v", "vb", "vs", "vd") if k in rec]
        if len(values) > 1:
            raise SenmlError(f"record {i}: more than one value field ({', '.join(values)})")
        if not values and "s" not in rec:
            if any(k in rec for k in ("n", "u", "t")):
                raise SenmlError(f"record {i}: has no value (v, vb, vs, vd) or sum (s)")
            continue  # a record of base fields only
        name = bn + (_text(rec["n"], "n", i) if "n" in rec else "")
        if not _NAME.fullmatch(name):
            raise SenmlError(
                f"record {i}: name {shown(name)} is empty or has characters 4.5.1 forbids"
            )
        value: Value | None = None
        if "v" in rec:
            value = _sum(bv, _num(rec["v"], "v", i), "bv + v", i)
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise SenmlError(f"record {i}: vb must be true or false")
            value = rec["vb"]
        elif "vs" in rec:
            value = _text(rec["vs"], "vs", i)
        elif "vd" in rec:
            value = _data(rec["vd"], i)
        s = None
        if "s" in rec:
            s = _sum(bs or 0.0, _num(rec["s"], "s", i), "bs + s", i)
        t = _sum(bt, _num(rec["t"], "t", i), "bt + t", i) if "t" in rec else bt
        time: float | None = t
        if t < RELATIVE_TIME_LIMIT:  # 0 is "now", negative the past
            time = None if now is None else _sum(now, t, "now + t", i)
        unit = _text(rec["u"], "u", i) if "u" in rec else bu
        out.append(Record(name, value, unit, time, s))
    return out


def _unbase64url(x: object, i: int) -> bytes:
    """``vd`` in JSON: base64url (RFC 4648 5), padding optional on the way in (4.3)."""
    if not isinstance(x, str) or not _BASE64URL.fullmatch(x) or len(x.rstrip("=")) % 4 == 1:
        raise SenmlError(f"record {i}: vd must be base64url text (got {shown(x)})")
    text = x.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_json(data: bytes | str, now: float | None = None) -> list[Record]:
    """Resolved records of a SenML JSON payload."""
    try:
        check_size(data, MAX_PACK_BYTES, "the SenML payload")
        check_json_depth(data, MAX_DEPTH, "the SenML payload")
    except DecodeError as err:
        raise SenmlError(str(err)) from None
    try:
        pack = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        # ValueError also covers integers of more than 4300 digits (CPython's limit)
        raise SenmlError(f"not JSON: {str(err)[:120]}") from err
    if isinstance(pack, list):
        pack = [
            {**rec, "vd": _unbase64url(rec["vd"], i)}
            if isinstance(rec, dict) and "vd" in rec
            else rec
            for i, rec in enumerate(pack)
        ]
    return resolve(pack, now)


def decode_cbor(data: bytes, now: float | None = None) -> list[Record]:
    """Resolved records of a SenML CBOR payload (integer labels, 6)."""
    try:
        check_size(data, MAX_PACK_BYTES, "the SenML payload")
    except DecodeError as err:
        raise SenmlError(str(err)) from None
    fp = io.BytesIO(data)
    try:  # read_size 1: the stream's position then says where the pack ended
        pack = cbor2.CBORDecoder(fp, read_size=1, max_depth=MAX_DEPTH).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as err:
        raise SenmlError(f"not CBOR: {str(err)[:120]}") from err
    if fp.tell() != len(data):
        raise SenmlError(f"not CBOR: {len(data) - fp.tell()} bytes after the pack")
    if not isinstance(pack, list):
        raise SenmlError("a SenML pack is an array of records")
    named = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise SenmlError(f"record {i} is not a map")
        fields = {}
        for k, v in rec.items():
            if isinstance(k, int) and not isinstance(k, bool) and k in CBOR_LABELS:
                fields[CBOR_LABELS[k]] = v
            elif isinstance(k, str) and k.endswith("_"):
                fields[k] = v  # must-understand extension names are refused by resolve
            else:
                raise SenmlError(f"record {i}: unknown label {shown(k)}")
        named.append(fields)
    return resolve(named, now)


def _pack(records: Sequence[Record], base_name: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, r in enumerate(records):
        if not r.name.startswith(base_name):
            raise EncodeError(f"record {r.name!r} does not start with the base name")
        rec: dict[str, Any] = {}
        if i == 0 and base_name:
            rec["bn"] = base_name
        rec["n"] = r.name[len(base_name) :]
        if r.unit is not None:
            rec["u"] = r.unit
        if isinstance(r.value, bool):
            rec["vb"] = r.value
        elif isinstance(r.value, int | float):
            if not math.isfinite(r.value):
                raise EncodeError(f"{r.name}: {r.value} is not a finite number")
            rec["v"] = r.value
        elif isinstance(r.value, str):
            rec["vs"] = r.value
        elif isinstance(r.value, bytes):
            rec["vd"] = r.value
        if r.time is not None:
            rec["t"] = r.time
        out.append(rec)
    return out


def encode_json(records: Sequence[Record], base_name: str = "") -> bytes:
    pack = _pack(records, base_name)
    for rec in pack:
        if "vd" in rec:  # JSON carries data values as base64url without padding (5)
            rec["vd"] = base64.urlsafe_b64encode(rec["vd"]).rstrip(b"=").decode()
    return json.dumps(pack, separators=(",", ":"), ensure_ascii=False).encode()


def encode_cbor(records: Sequence[Record], base_name: str = "") -> bytes:
    return cbor2.dumps(
        [{_LABEL_OF[k]: v for k, v in rec.items()} for rec in _pack(records, base_name)]
    )
