"""TelemetryEncoder: bytes written straight from a poll decode to the envelope the model gives,
and what the model refuses the encoder refuses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import IntEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols import envelope as env

ID = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
IDENT = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
VALUE = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
)
UNIT = st.one_of(st.none(), st.text(max_size=8))
# Unix seconds within 1970..2200, with and without a fraction
TIME = st.one_of(
    st.integers(min_value=0, max_value=7_258_118_400).map(float),
    st.floats(min_value=0, max_value=7_258_118_400, allow_nan=False),
)


def model_of(
    device: str,
    time: float,
    readings: Sequence[tuple[str, object, str | None]],
    site: str = "riverside",
) -> object:
    return env.TelemetryEnvelope(
        id=ID,
        site=site,
        gateway="gw-1",
        device=device,
        time=env.utc_datetime(time),
        payload=env.TelemetryPayload(
            readings=[env.PointValue(point=p, value=v, unit=u) for p, v, u in readings]
        ),
    )


@given(IDENT, TIME, st.lists(st.tuples(IDENT, VALUE, UNIT), min_size=1, max_size=6))
def test_encoded_bytes_decode_to_the_models_envelope(
    device: str, time: float, readings: list[tuple[str, bool | int | float, str | None]]
) -> None:
    enc = env.TelemetryEncoder("riverside", "gw-1").encode(ID, device, time, readings)
    assert env.decode(enc.data) == model_of(device, time, readings)
    assert (enc.kind, enc.site, enc.gateway, enc.device, enc.id) == (
        "telemetry",
        "riverside",
        "gw-1",
        device,
        ID,
    )
    assert env.wire_bytes(enc) == enc.data
    assert env.as_model(enc) == model_of(device, time, readings)


def test_the_same_point_twice_reuses_nothing_wrong() -> None:
    """The per-point fragments are cached by (point, unit): a unit that changes is written."""
    encoder = env.TelemetryEncoder("riverside", "gw-1")
    first = env.decode(encoder.encode(ID, "d1", 0.0, [("t", 1.5, "°C")]).data)
    second = env.decode(encoder.encode(ID, "d2", 0.5, [("t", 2, "K"), ("t2", True, None)]).data)
    assert isinstance(first, env.TelemetryEnvelope) and isinstance(second, env.TelemetryEnvelope)
    assert [(r.point, r.value, r.unit) for r in first.payload.readings] == [("t", 1.5, "°C")]
    assert [(r.point, r.value, r.unit) for r in second.payload.readings] == [
        ("t", 2, "K"),
        ("t2", True, None),
    ]
    assert second.device == "d2"
    assert second.time.isoformat() == "1970-01-01T00:00:00.500000+00:00"


class Level(IntEnum):
    HIGH = 3


def test_int_and_float_subclasses_are_written_as_their_base_type() -> None:
    enc = env.TelemetryEncoder("riverside", "gw-1").encode(ID, "d", 0.0, [("a", Level.HIGH, None)])
    decoded = env.decode(enc.data)
    assert isinstance(decoded, env.TelemetryEnvelope)
    assert decoded.payload.readings[0].value == 3


@pytest.mark.parametrize(
    ("site", "device", "readings", "named"),
    [
        ("a/b", "d", [("p", 1, None)], "site"),
        ("s", "+", [("p", 1, None)], "device"),
        ("s", "d", [("p q", 1, None)], "point"),
        ("s", "d", [("p", math.nan, None)], "finite"),
        ("s", "d", [("p", math.inf, None)], "finite"),
        ("s", "d", [("p", None, None)], "finite"),
        ("s", "d", [], "at least one reading"),
    ],
)
def test_refuses_what_the_model_refuses(
    site: str, device: str, readings: list[tuple[str, object, str | None]], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        env.TelemetryEncoder(site, "gw-1").encode(ID, device, 0.0, readings)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        model_of(device, 0.0, readings, site)


@given(
    st.integers(min_value=0, max_value=0xFFFFFFFF),
    st.integers(min_value=0, max_value=0xFFFF),
)
def test_a_node_reports_origin_is_written_as_the_model_writes_it(boot: int, seq: int) -> None:
    readings = [("fill_pct", 47.5, "%")]
    enc = env.TelemetryEncoder("riverside", "gw-1").encode(ID, "bin-1", 0.0, readings, (boot, seq))
    want = env.TelemetryEnvelope(
        id=ID,
        site="riverside",
        gateway="gw-1",
        device="bin-1",
        time=env.utc_datetime(0.0),
        payload=env.TelemetryPayload(
            readings=[env.PointValue(point="fill_pct", value=47.5, unit="%")],
            origin=env.Origin(boot=boot, seq=seq),
        ),
    )
    assert env.decode(enc.data) == want


def test_an_origin_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="origin"):
        env.TelemetryEncoder("riverside", "gw-1").encode(ID, "b", 0.0, [("p", 1, None)], (0, 70000))


@given(st.lists(TIME, min_size=1, max_size=40), st.booleans())
def test_the_encoders_clock_writes_what_json_time_writes(times: list[float], ordered: bool) -> None:
    """The encoder makes the date and time of day once per second: in order (a gateway's
    polls) or not, at whole seconds, and where the microseconds round up into the next one."""
    clock = env._JsonClock()
    for t in sorted(times) if ordered else times:
        assert clock(t) == env.json_time(t)


def test_the_encoders_clock_at_the_edges_of_a_second() -> None:
    clock = env._JsonClock()
    for t in (1000.0, 1000.25, 1000.9999994, 1000.9999996, 1001.0, 1001.0000004, 1000.5):
        assert clock(t) == env.json_time(t)
    assert clock(1000.9999996) == "1970-01-01T00:16:41Z"  # rounded into the next second
