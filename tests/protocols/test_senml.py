"""SenML: the examples of RFC 8428 (JSON and the CBOR bytes of section 6), errors, fuzzing."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import senml
from protocols.senml import Record, SenmlError

# RFC 8428 6: the CBOR representation of the 5.1.3 example, byte for byte
RFC_CBOR_HEX = """
87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a 31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00 67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06 24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67 63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
33 33 33
"""
RFC_JSON = b"""[
 {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
 {"n":"current","t":-5,"v":1.2},
 {"n":"current","t":-4,"v":1.3},
 {"n":"current","t":-3,"v":1.4},
 {"n":"current","t":-2,"v":1.5},
 {"n":"current","t":-1,"v":1.6},
 {"n":"current","v":1.7}
]"""
BT = 1.276020076001e09
BN = "urn:dev:ow:10e2073a0108006:"
RESOLVED = [Record(BN + "voltage", 120.1, "V", BT)] + [
    Record(BN + "current", v, "A", BT + t)
    for t, v in ((-5, 1.2), (-4, 1.3), (-3, 1.4), (-2, 1.5), (-1, 1.6), (0, 1.7))
]


def test_rfc8428_cbor_bytes_resolve_like_the_json() -> None:
    data = bytes.fromhex(RFC_CBOR_HEX)
    assert len(data) == 0xC3
    assert senml.decode_cbor(data) == RESOLVED
    assert senml.decode_json(RFC_JSON) == RESOLVED


@pytest.mark.parametrize(
    ("payload", "now", "expected"),
    [
        # 5.1.1 single datapoint, time "now"
        (
            b'[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]',
            1000.0,
            [Record("urn:dev:ow:10e2073a01080063", 23.1, "Cel", 1000.0)],
        ),
        # 5.1.2 multiple datapoints with a base name
        (
            b'[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},{"n":"current","u":"A","v":1.2}]',
            None,
            [
                Record("urn:dev:ow:10e2073a01080063:voltage", 120.1, "V"),
                Record("urn:dev:ow:10e2073a01080063:current", 1.2, "A"),
            ],
        ),
        # 5.1.6 boolean and string values; bv adds to v
        (
            b'[{"bn":"d:","bv":10,"n":"a","v":1},{"n":"door","vb":true},{"n":"label","vs":"ok"}]',
            None,
            [Record("d:a", 11.0), Record("d:door", True), Record("d:label", "ok")],
        ),
        # a base-only record, then relative time against "now"
        (b'[{"bt":-10},{"n":"x","v":2}]', 100.0, [Record("x", 2.0, None, 90.0)]),
    ],
)
def test_resolution_table(payload: bytes, now: float | None, expected: list[Record]) -> None:
    assert senml.decode_json(payload, now) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{}", "array of records"),
        (b"[1]", "record 0 is not"),
        (b'[{"n":"x"}]', "has no value"),
        (b'[{"n":"x","v":1,"vb":true}]', "more than one value"),
        (b'[{"n":"x","v":"high"}]', "finite number"),
        (b'[{"n":"x y","v":1}]', "forbids"),
        (b'[{"n":"x","v":1,"speed_":1}]', "must-understand field"),
        (b'[{"n":"x","v":1,"bogus":1}]', "unknown field"),
        (b'[{"bver":99,"n":"x","v":1}]', "version"),
        (b"not json", "not JSON"),
    ],
)
def test_bad_json_packs_say_why(payload: bytes, message: str) -> None:
    with pytest.raises(SenmlError, match=message):
        senml.decode_json(payload)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff", "not CBOR"),
        (bytes.fromhex("81a1186301"), "unknown label"),
        (bytes.fromhex("a0"), "array"),
    ],
)
def test_bad_cbor_says_why(data: bytes, message: str) -> None:
    with pytest.raises(SenmlError, match=message):
        senml.decode_cbor(data)


_records = st.lists(
    st.builds(
        Record,
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False, width=64)
        | st.booleans()
        | st.text(max_size=5),
        st.none() | st.sampled_from(["Cel", "ug/m3", "%RH"]),
        st.none() | st.floats(min_value=2**28, max_value=2**32),
    ),
    max_size=10,
)


@given(_records)
def test_round_trip_json_and_cbor(records: list[Record]) -> None:
    named = [Record("dev1:" + r.name, r.value, r.unit, r.time) for r in records]
    assert senml.decode_cbor(senml.encode_cbor(named, "dev1:")) == named
    assert senml.decode_json(senml.encode_json(named, "dev1:")) == named


@given(st.binary(max_size=300))
def test_fuzz_cbor_decoder_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(SenmlError):
        for r in senml.decode_cbor(data):
            assert isinstance(r, Record)
            assert not isinstance(r.value, float) or math.isfinite(r.value)


@given(st.text(max_size=200))
def test_fuzz_json_decoder_raises_only_its_own_error(text: str) -> None:
    with contextlib.suppress(SenmlError):
        senml.decode_json(text)
