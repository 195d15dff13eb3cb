"""The pure decoders under wrong, hostile and huge input: each raises only its documented error.

Tables first (each row a way a decoder once broke its contract, issue 13 finding 9), then fuzz
targets that mutate valid payloads, so they get past the first checks.
"""

from __future__ import annotations

import base64
import contextlib
import math
from datetime import UTC, datetime

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import envelope as env
from protocols import senml
from protocols.errors import DecodeError
from protocols.limits import check_json_depth, json_depth_exceeds, shown
from protocols.modbus import DataType, PointSpec, RegisterType, decode_value, encode_raw
from protocols.senml import Record, SenmlError
from tests.abuse.fuzz import FUZZ, fuzz_input

BIG_INT = b"1" + b"0" * 400  # beyond float range: float() overflows

SENML_JSON_REFUSED = [
    # (payload, what the message says) -- before: OverflowError, RecursionError,
    # UnicodeEncodeError escaped, or inf came out as a value
    (b'[{"n":"x","v":' + BIG_INT + b"}]", "finite number"),
    (b'[{"bt":' + BIG_INT + b',"n":"x","v":1}]', "finite number"),
    (b"[" * 100_000, "deeper than 4"),
    (b'[{"n":"x","vs":[[[[[1]]]]]}]', "deeper than 4"),
    (b'[{"n":"x","vd":"\\ud800"}]', "vd must be base64url"),
    (b'[{"n":"x","vs":"\\ud800"}]', "lone surrogate"),
    (b'[{"n":"x","u":"\\udfff","v":1}]', "lone surrogate"),
    (b'[{"bv":1e308,"n":"x","v":1e308}]', "bv \\+ v overflows"),
    (b'[{"bt":1e308,"n":"x","v":1,"t":1e308}]', "bt \\+ t overflows"),
    (b'[{"bs":1e308,"n":"x","s":1e308}]', "bs \\+ s overflows"),
    (b'[{"n":"x","v":NaN}]', "finite number"),
    (b'[{"n":"x","v":1e999}]', "finite number"),
    (b'[{"n":"x","v":' + b"9" * 5000 + b"}]", "not JSON"),  # CPython's 4300-digit limit
    (b'[{"n":"x","vd":"a"}]', "base64url"),  # one character is never base64
    (b'[{"n":"x","vd":"a+b/"}]', "base64url"),  # not the URL-safe alphabet
    (b'[{"n":"x\\n","v":1}]', "forbids"),  # '$' matched before a final newline
    (b'[{"n":["x"],"v":1}]', "n must be a string"),
    (b'[{"n":"x","u":{"a":1},"v":1}]', "u must be a string"),
    (b'[{"bver":true,"n":"x","v":1}]', "version"),
    (b"[" + b'{"n":"x","v":1},' * 70_000 + b"]", "at most 1048576"),
    (b'[{"' + b"k" * 10_000 + b'":1}]', "unknown field"),
]


@pytest.mark.parametrize(
    ("payload", "message"), SENML_JSON_REFUSED, ids=range(len(SENML_JSON_REFUSED))
)
def test_senml_json_refuses_hostile_packs_with_its_own_error(payload: bytes, message: str) -> None:
    with pytest.raises(SenmlError, match=message) as caught:
        senml.decode_json(payload)
    assert len(str(caught.value)) < 300  # a huge key or number is never echoed whole


def test_senml_vd_is_base64url_in_json_and_bytes_in_cbor() -> None:
    """RFC 8428 4.3: data values are base64url without padding in JSON (they were returned as
    the text's own bytes)."""
    data = bytes(range(256))
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert senml.decode_json(f'[{{"n":"blob","vd":"{text}"}}]') == [Record("blob", data)]
    assert senml.decode_json(f'[{{"n":"blob","vd":"{text}=="}}]') == [Record("blob", data)]
    assert senml.decode_cbor(cbor2.dumps([{0: "blob", 8: data}])) == [Record("blob", data)]
    records = [Record("d:blob", data), Record("d:x", 1.5)]
    assert senml.decode_json(senml.encode_json(records, "d:")) == records
    with pytest.raises(SenmlError, match="vd must be a byte string"):
        senml.decode_cbor(cbor2.dumps([{0: "blob", 8: text}]))


SENML_CBOR_REFUSED = [
    (cbor2.dumps([{0: "x", 2: 2**1100}]), "finite number"),  # a bignum beyond float range
    (cbor2.dumps([{-5: 1e308, 0: "x", 2: 1e308}]), "overflows"),
    (cbor2.dumps([{0: "x", 3: ["not", "text"]}]), "vs must be a string"),
    (cbor2.dumps([{True: "x", 2: 1}]), "unknown label True"),  # True == 1 is not label 1
    (cbor2.dumps([{2**1100: 1}]), "unknown label <an integer of 1101 bits>"),
    (b"\x81" * 100 + b"\x00", "not CBOR"),  # nesting beyond the depth a pack can have
    (cbor2.dumps([{0: "x", 2: 1}]) + b"\x00", "not CBOR"),
]


@pytest.mark.parametrize(
    ("payload", "message"), SENML_CBOR_REFUSED, ids=range(len(SENML_CBOR_REFUSED))
)
def test_senml_cbor_refuses_hostile_packs_with_its_own_error(payload: bytes, message: str) -> None:
    with pytest.raises(SenmlError, match=message):
        senml.decode_cbor(payload)


def _float64(value: float, scale: float) -> tuple[PointSpec, list[int]]:
    spec = PointSpec(
        name="flow",
        register_type=RegisterType.HOLDING,
        address=0,
        dtype=DataType.FLOAT64,
        scale=scale,
    )
    return spec, encode_raw(DataType.FLOAT64, value, spec.byte_order, spec.word_order)


@pytest.mark.parametrize(("value", "scale"), [(1e308, 10.0), (-1e308, 10.0), (1e300, 1e10)])
def test_modbus_scaling_beyond_float_range_is_a_decode_error(value: float, scale: float) -> None:
    """It returned inf, and the telemetry envelope refused it further on (finding 9)."""
    spec, registers = _float64(value, scale)
    with pytest.raises(DecodeError, match="not finite"):
        decode_value(spec, registers)


T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
_HEAD = '"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","site":"s","gateway":"g","device":"d",'
_HEAD += '"time":"2026-11-24T08:00:00Z","schema_version":1'
# one envelope of four kinds, as bytes: the seeds of the mutations (each checked to decode)
ENVELOPE_SEEDS = [
    ("{" + _HEAD + ',"kind":' + kind + ',"payload":' + payload + "}").encode()
    for kind, payload in (
        ('"telemetry"', '{"readings":[{"point":"ph","value":7.25,"unit":"pH"},'
         '{"point":"door","value":true},{"point":"count","value":4611686018427387904}]}'),
        ('"alarm"', '{"rule":"r","point":"ph","state":"raised","severity":"major","value":9.4,'
         '"limit":9.0,"direction":"above","unit":"pH","since":"2026-11-24T08:00:00Z"}'),
        ('"availability"', '{"state":"unavailable","reason":"timeout","failed_polls":2,'
         '"since":"2026-11-24T08:00:00Z"}'),
        ('"aggregate"', '{"period":"hour","start":"2026-11-24T08:00:00Z","medium":"water",'
         '"values":[{"point":"ph","unit":"pH","count":60,"coverage":1,"min":6.9,"avg":7.1,'
         '"max":7.4,"flag":"N"}]}'),
    )
]  # fmt: skip
assert all(env.decode(seed) for seed in ENVELOPE_SEEDS)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
@pytest.mark.parametrize("seed", [1, 3], ids=["alarm", "aggregate"])
def test_envelope_refuses_non_finite_numbers(number: bytes, seed: int) -> None:
    """These decoded, and the envelope's own encoding (null) then did not (finding 9)."""
    field = b'"value":9.4' if seed == 1 else b'"avg":7.1'
    data = ENVELOPE_SEEDS[seed].replace(field, field.split(b":")[0] + b":" + number)
    assert data != ENVELOPE_SEEDS[seed]
    with pytest.raises(DecodeError, match="finite"):
        env.decode(data)


def test_envelope_models_refuse_non_finite_numbers_when_built() -> None:
    with pytest.raises(ValueError, match="finite"):
        env.AlarmPayload(
            rule="r", point="ph", state=env.AlarmState.RAISED, severity=env.Severity.MAJOR,
            value=math.inf, limit=9.0, direction="above", since=T0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "depth", "deeper"),
    [
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b'["[[[[[[["]', 1, False),  # brackets inside a string do not count
        (b'["\\"[[[["]', 1, False),  # nor after an escaped quote
        (b'{"a":[{"b":[1]}]}', 4, False),
        (b'{"a":[{"b":[1]}]}', 3, True),
        (b'"unterminated [[[[', 0, False),
        (b"[" * 1_000_000, 400, True),
    ],
    ids=range(8),
)
def test_json_depth_is_found_before_parsing(text: bytes, depth: int, deeper: bool) -> None:
    assert json_depth_exceeds(text, depth) is deeper
    assert json_depth_exceeds(text.decode(), depth) is deeper
    if deeper:
        with pytest.raises(DecodeError, match=f"deeper than {depth}"):
            check_json_depth(text, depth, "x")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10**5000, "<an integer of 16610 bits>"),
        ("x" * 1000, "'" + "x" * 39 + "…"),
        ([[1]] * 10**6, "<a list of 1000000 items>"),
        (b"\xff", "b'\\xff'"),
        (1.5, "1.5"),
    ],
    ids=["int", "str", "list", "bytes", "float"],
)
def test_shown_values_are_short_and_never_raise(value: object, text: str) -> None:
    assert shown(value) == text


_RECORDS = [Record("d:x", 1.5, "Cel", 2e9), Record("d:b", b"\x01")]
SENML_SEEDS = {
    "json": (senml.encode_json(_RECORDS, "d:"), senml.decode_json),
    "cbor": (senml.encode_cbor(_RECORDS, "d:"), senml.decode_cbor),
}


@FUZZ
@given(
    st.sampled_from(sorted(SENML_SEEDS)).flatmap(
        lambda fmt: st.tuples(st.just(fmt), fuzz_input([SENML_SEEDS[fmt][0]]))
    )
)
def test_fuzz_senml_mutations_raise_only_senml_error(case: tuple[str, bytes]) -> None:
    fmt, data = case
    with contextlib.suppress(SenmlError):
        for r in SENML_SEEDS[fmt][1](data, 1e9):
            assert not isinstance(r.value, float) or math.isfinite(r.value)
            assert r.time is None or math.isfinite(r.time)
            r.name.encode()
            (r.unit or "").encode()


@FUZZ
@given(fuzz_input(ENVELOPE_SEEDS))
def test_fuzz_every_envelope_that_decodes_reencodes_to_itself(data: bytes) -> None:
    """``decode(encode(decode(x))) == decode(x)``: an accepted envelope can always be stored
    and forwarded (NaN became null, which the same model refused)."""
    try:
        e = env.decode(data)
    except DecodeError:
        return
    assert env.decode(env.encode(e)) == e
