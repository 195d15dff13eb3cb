"""The event envelope: the committed schema, round trips, and what is refused."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import envelope as env
from protocols.errors import DecodeError

SCHEMA_FILE = Path(env.__file__).parent / "schemas" / "envelope.schema.json"
ID = "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"


def telemetry_json(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": ID,
        "site": "riverside",
        "gateway": "gw-1",
        "device": "sonde-1",
        "time": "2026-11-24T08:00:00.250000Z",
        "schema_version": 1,
        "kind": "telemetry",
        "payload": {"readings": [{"point": "ph", "value": 7.25, "unit": "pH"}]},
    }
    doc.update(overrides)
    return doc


def test_committed_schema_equals_the_models() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == env.json_schema(), "run 'cityedge schema --write' and commit the result"


def test_schema_lists_every_kind() -> None:
    kinds = set(env.json_schema()["discriminator"]["mapping"])
    assert kinds == {
        "telemetry",
        "alarm",
        "availability",
        "access",
        "aggregate",
        "signal_plan",
        "signal_fallback",
        "bin",
        "collection",
        "hygiene",
    }


def test_decode_encode_round_trip() -> None:
    raw = json.dumps(telemetry_json()).encode()
    e = env.decode(raw)
    assert isinstance(e, env.TelemetryEnvelope)
    assert e.id == UUID(ID)
    assert e.payload.readings[0].value == 7.25
    assert env.decode(env.encode(e)) == e


def test_bool_values_stay_bool_and_ints_stay_int() -> None:
    e = env.decode(
        json.dumps(
            telemetry_json(
                payload={
                    "readings": [{"point": "fouled", "value": True}, {"point": "count", "value": 3}]
                }
            )
        )
    )
    assert isinstance(e, env.TelemetryEnvelope)
    assert e.payload.readings[0].value is True
    assert e.payload.readings[1].value == 3 and isinstance(e.payload.readings[1].value, int)


BAD = [
    ("unknown kind", telemetry_json(kind="gossip"), "kind"),
    ("naive time", telemetry_json(time="2026-11-24T08:00:00"), "time"),
    ("bad id", telemetry_json(id="not-a-uuid"), "id"),
    ("slash in device", telemetry_json(device="a/b"), "device"),
    ("wildcard in site", telemetry_json(site="+"), "site"),
    ("extra key", {**telemetry_json(), "secret": 1}, "secret"),
    ("empty readings", telemetry_json(payload={"readings": []}), "readings"),
    ("payload of another kind", telemetry_json(kind="alarm"), "payload"),
    ("future schema version", telemetry_json(schema_version=2), "schema_version"),
    ("missing payload", {k: v for k, v in telemetry_json().items() if k != "payload"}, "payload"),
]


@pytest.mark.parametrize(("doc", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_refused_with_the_field_named(doc: dict[str, object], field: str) -> None:
    with pytest.raises(DecodeError, match=field):
        env.decode(json.dumps(doc))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"kind": "telemetry"}'])
def test_garbage_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        env.decode(raw)


def test_nan_is_refused_when_building() -> None:
    with pytest.raises(ValueError, match="finite"):
        env.PointValue(point="ph", value=float("nan"))


def test_alarm_and_availability_round_trip() -> None:
    t = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    alarm = env.AlarmEnvelope(
        id=UUID(ID),
        site="s",
        gateway="g",
        device="d",
        time=t,
        payload=env.AlarmPayload(
            rule="r",
            point="ph",
            state=env.AlarmState.RAISED,
            severity=env.Severity.MAJOR,
            value=9.4,
            limit=9.0,
            direction="above",
            unit="pH",
            since=t,
        ),
    )
    avail = env.AvailabilityEnvelope(
        id=UUID(ID),
        site="s",
        gateway="g",
        device="d",
        time=t,
        payload=env.AvailabilityPayload(
            state=env.AvailabilityState.UNAVAILABLE, reason="timeout", failed_polls=2, since=t
        ),
    )
    for e in (alarm, avail):
        assert env.decode(env.encode(e)) == e


@given(st.binary(max_size=200))
def test_fuzz_any_bytes_give_an_envelope_or_a_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        env.decode(raw)


@given(st.text(max_size=200))
def test_fuzz_any_text_give_an_envelope_or_a_decode_error(raw: str) -> None:
    with contextlib.suppress(DecodeError):
        env.decode(raw)
