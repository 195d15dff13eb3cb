"""SenML (RFC 8428): sensor measurement lists in JSON or CBOR, resolved to plain records.

A pack is an array of records. Base fields (``bn`` name, ``bt`` time, ``bu`` unit, ``bv``
value, ``bs`` sum, ``bver``) apply to the record they are in and to every later one until
changed (4.1). Resolving (4.6) gives each record its full name (``bn + n``), its time
(``bt + t``; below 2**28 it is relative to "now", 4.5.3), unit (``u`` else ``bu``) and value
(``bv + v``; or ``vb``, ``vs``, ``vd``).

CBOR uses integer labels for the fields (6, table 6): bver -1, bn -2, bt -3, bu -4, bv -5,
bs -6, n 0, u 1, v 2, vs 3, vb 4, s 5, t 6, ut 7, vd 8.

Content-Formats (12.3): 110 ``application/senml+json``, 112 ``application/senml+cbor``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from protocols.errors import DecodeError, EncodeError

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
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*$")  # 4.5.1

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
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise SenmlError(f"record {i}: {what} must be a finite number (got {x!r})")
    return float(x)


def resolve(pack: Sequence[Mapping[str, Any]], now: float | None = None) -> list[Record]:
    """Resolved records (RFC 8428 4.6) of a decoded pack (records with string keys)."""
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
            raise SenmlError(f"record {i}: {kind} field {unknown[0]!r} is not supported")
        if "bver" in rec and (not isinstance(rec["bver"], int) or rec["bver"] > 10):
            raise SenmlError(f"record {i}: unsupported SenML version {rec['bver']!r}")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise SenmlError(f"record {i}: bn must be a string")
            bn = rec["bn"]
        if "bt" in rec:
            bt = _num(rec["bt"], "bt", i)
        if "bu" in rec:
            bu = str(rec["bu"])
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
        name = bn + str(rec.get("n", ""))
        if not name or not _NAME.match(name):
            raise SenmlError(f"record {i}: name {name!r} is empty or has characters 4.5.1 forbids")
        value: Value | None = None
        if "v" in rec:
            value = bv + _num(rec["v"], "v", i)
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise SenmlError(f"record {i}: vb must be true or false")
            value = rec["vb"]
        elif "vs" in rec:
            value = str(rec["vs"])
        elif "vd" in rec:
            value = rec["vd"] if isinstance(rec["vd"], bytes) else str(rec["vd"]).encode()
        s = None
        if "s" in rec:
            s = (bs or 0.0) + _num(rec["s"], "s", i)
        t = bt + (_num(rec["t"], "t", i) if "t" in rec else 0.0)
        time: float | None = t
        if t < RELATIVE_TIME_LIMIT:  # 0 is "now", negative the past
            time = None if now is None else now + t
        unit = str(rec["u"]) if "u" in rec else bu
        out.append(Record(name, value, unit, time, s))
    return out


def decode_json(data: bytes | str, now: float | None = None) -> list[Record]:
    """Resolved records of a SenML JSON payload."""
    try:
        pack = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise SenmlError(f"not JSON: {err}") from err
    return resolve(pack, now)


def decode_cbor(data: bytes, now: float | None = None) -> list[Record]:
    """Resolved records of a SenML CBOR payload (integer labels, 6)."""
    try:
        pack = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise SenmlError(f"not CBOR: {err}") from err
    if not isinstance(pack, list):
        raise SenmlError("a SenML pack is an array of records")
    named = []
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise SenmlError(f"record {i} is not a map")
        fields = {}
        for k, v in rec.items():
            if isinstance(k, int) and k in CBOR_LABELS:
                fields[CBOR_LABELS[k]] = v
            elif isinstance(k, str) and k.endswith("_"):
                fields[k] = v  # must-understand extension names are refused by resolve
            else:
                raise SenmlError(f"record {i}: unknown label {k!r}")
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
