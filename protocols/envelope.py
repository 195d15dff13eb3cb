"""The event envelope: every message from a gateway to the city brain travels in one.

An envelope carries a unique, time-ordered ``id`` (UUIDv7, see :mod:`protocols.ids`), where it
comes from (``site``, ``gateway``, ``device``), what it is (``kind``), when it happened (``time``,
RFC 3339 with a UTC offset), the ``schema_version`` of this contract and a ``payload`` whose shape
is fixed by ``kind``. On the wire it is UTF-8 JSON; the JSON Schema generated from these models is
committed at ``protocols/schemas/envelope.schema.json`` and a test keeps the two equal
(regenerate with ``cityedge schema --write``).

Adding a kind: write its payload model here, add an ``XEnvelope`` class with
``kind: Literal["x"]`` and add it to :data:`Envelope`; then regenerate the schema. The kinds
``state`` and ``cmd`` are reserved by the topic tree.

Edge cases:
- ``time`` must carry a UTC offset; naive datetimes are refused, so a gateway with a wrongly
  configured timezone cannot publish ambiguous times.
- Telemetry values are finite numbers or booleans. NaN and infinity are not JSON and are refused;
  a source that reads one reports a bad reading instead.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from protocols.errors import DecodeError

SCHEMA_VERSION: Final = 1

#: Names usable as one MQTT topic level and as a database key: no '/', '+', '#', no spaces.
Ident = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
    Field(description="1-64 characters: letters, digits, '_', '.', '-'; starts alphanumeric"),
]


class Severity(StrEnum):
    """Alarm severity, lowest first (ITU-T X.733 perceived severity, without 'indeterminate')."""

    INFO = "info"
    WARNING = "warning"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PointValue(_Model):
    """One decoded value of one point of a device."""

    point: Ident = Field(description="Point name, unique within its device")
    value: StrictBool | int | float = Field(
        description="Engineering value (scale and offset applied)"
    )
    unit: str | None = Field(default=None, description="Unit of the value, e.g. 'mg/L', 'µg/m³'")

    @field_validator("value")
    @classmethod
    def _finite(cls, v: bool | int | float) -> bool | int | float:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("value must be finite (NaN and infinity are not JSON)")
        return v


class TelemetryPayload(_Model):
    """The values read from one device in one poll."""

    readings: list[PointValue] = Field(min_length=1, description="Values read in this poll")


class AlarmState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class AlarmPayload(_Model):
    """A threshold alarm being raised or cleared."""

    rule: str = Field(description="Name of the rule that raised the alarm")
    point: Ident = Field(description="The point the rule watches")
    state: AlarmState = Field(description="'raised' when the limit was crossed, 'cleared' after")
    severity: Severity = Field(description="How urgent the alarm is")
    value: float = Field(description="The value that raised or cleared the alarm")
    limit: float = Field(description="The configured limit")
    direction: Literal["above", "below"] = Field(description="Which side of the limit is bad")
    unit: str | None = Field(default=None, description="Unit of value and limit")
    since: AwareDatetime = Field(description="When the value first crossed (raise) or came back")


class AvailabilityState(StrEnum):
    UNAVAILABLE = "unavailable"
    RECOVERED = "recovered"


class AvailabilityPayload(_Model):
    """A device stopped answering, or answers again. Sent once per change, not per failed poll."""

    state: AvailabilityState = Field(description="'unavailable' or 'recovered'")
    reason: str = Field(description="Why: the last error, or what recovered it")
    failed_polls: int = Field(ge=0, description="Consecutive failed polls before this event")
    since: AwareDatetime = Field(
        description="Last good poll (unavailable) or first failure (recovered)"
    )


class AccessDecision(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"


class LivenessCheck(_Model):
    """What the liveness (anti-spoofing) model said about the face, and how it was used."""

    score: float | None = Field(description="Model score, lower is more live; null if not run")
    live: bool | None = Field(description="score under the limit; null if not run")
    policy: Literal["enforce", "record", "off"] = Field(
        description="enforce: not live is refused; record: reported only; off: not run"
    )


class AccessPayload(_Model):
    """A gate decision by face access control. Never carries a face image or a template."""

    decision: AccessDecision = Field(description="'granted' (gate opened) or 'denied'")
    person: str = Field(
        pattern=r"^(unknown|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$",
        description="Enrolled person id, or 'unknown'",
    )
    score: float | None = Field(
        description="L2 distance to the closest enrolled template (lower is closer); null if none"
    )
    threshold: float = Field(description="Largest distance accepted as a match")
    reason: str = Field(description="Why: matched, unknown face, not live, gate busy, ...")
    liveness: LivenessCheck = Field(description="Liveness score and policy")
    latency_ms: float = Field(ge=0, description="From frame capture to relay command (or decision)")
    camera: Ident = Field(description="Camera that saw the face")
    relay: Literal["opened", "not_opened", "busy", "failed"] = Field(
        description="What happened at the gate relay"
    )
    models: dict[str, str] = Field(description="Model name -> name@version+sha256 prefix")


class BinEvent(StrEnum):
    NEEDS_COLLECTION = "needs_collection"
    EMPTIED = "emptied"


class BinPayload(_Model):
    """A bin crossed its collection threshold, or was emptied (one event per crossing)."""

    event: BinEvent = Field(description="'needs_collection' or 'emptied'")
    fill: float = Field(ge=0, le=1, description="Fill fraction the decision used (smoothed, fused)")
    fill_camera: float | None = Field(
        ge=0, le=1, description="Smoothed fill from the camera model; null if none is fresh"
    )
    fill_sensor: float | None = Field(
        ge=0, le=1, description="Latest fill from the level sensor; null if none is fresh"
    )
    threshold: float = Field(ge=0, le=1, description="The threshold that was crossed")
    overflow: float | None = Field(
        ge=0, le=1, description="Smoothed probability of rubbish over the rim; null without camera"
    )
    camera: Ident | None = Field(description="Camera that watches the bin, if any")
    models: dict[str, str] = Field(description="Model name -> name@version+sha256 prefix")


class CollectionItem(_Model):
    bin: Ident = Field(description="Bin id")
    fill: float = Field(ge=0, le=1, description="Current fill fraction")
    since: AwareDatetime = Field(description="When the bin crossed its collection threshold")
    overflowing: bool = Field(description="Rubbish over the rim or on the ground")


class CollectionPayload(_Model):
    """The bins a gateway watches that need collection now (the truck's list)."""

    bins: list[CollectionItem] = Field(description="Bins that need collection, fullest first")
    watched: int = Field(ge=0, description="How many bins the app watches")
    reason: Literal["change", "periodic"] = Field(
        description="Sent because the list changed, or as the periodic refresh"
    )


class Evidence(_Model):
    """A JPEG crop of the scene, faces blurred unless configured otherwise, kept on the gateway."""

    id: str = Field(description="Evidence id; the file on the gateway is <id>.jpg")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the JPEG bytes")
    width: int = Field(gt=0, description="Pixels")
    height: int = Field(gt=0, description="Pixels")
    faces_blurred: int = Field(ge=0, description="Face regions blurred in the crop")
    jpeg_base64: str | None = Field(
        description="The JPEG itself, base64; null when the site keeps evidence local only"
    )


class HygieneViolation(StrEnum):
    NO_MASK = "no_mask"
    NO_HAIR_COVER = "no_hair_cover"


class HygienePayload(_Model):
    """A person in a clean zone without mask or hair cover for longer than allowed."""

    camera: Ident = Field(description="Camera that saw it")
    zone: Ident = Field(description="Clean zone the person was in")
    track: int = Field(ge=0, description="Tracking id of the person on this camera")
    violations: list[HygieneViolation] = Field(min_length=1, description="What was missing")
    since: AwareDatetime = Field(description="When the person was first seen without it")
    duration_s: float = Field(ge=0, description="How long it lasted when reported")
    mask: float | None = Field(description="Smoothed probability of a mask; null if not judged")
    hair_cover: float | None = Field(description="Smoothed probability of a hair cover")
    person_score: float = Field(ge=0, le=1, description="Person detector confidence")
    evidence: Evidence = Field(description="The evidence crop")
    models: dict[str, str] = Field(description="Model name -> name@version+sha256 prefix")


class _EnvelopeBase(_Model):
    id: UUID = Field(description="UUIDv7: unique, and sorts in time order")
    site: Ident = Field(description="Site the gateway serves")
    gateway: Ident = Field(description="Gateway that produced the envelope")
    device: Ident = Field(description="Device the envelope is about (the gateway's id for itself)")
    time: AwareDatetime = Field(description="When it happened, RFC 3339 with offset")
    schema_version: Literal[1] = Field(default=1, description="Version of this contract")


class TelemetryEnvelope(_EnvelopeBase):
    kind: Literal["telemetry"] = "telemetry"
    payload: TelemetryPayload


class AlarmEnvelope(_EnvelopeBase):
    kind: Literal["alarm"] = "alarm"
    payload: AlarmPayload


class AvailabilityEnvelope(_EnvelopeBase):
    kind: Literal["availability"] = "availability"
    payload: AvailabilityPayload


class AccessEnvelope(_EnvelopeBase):
    kind: Literal["access"] = "access"
    payload: AccessPayload


class BinEnvelope(_EnvelopeBase):
    kind: Literal["bin"] = "bin"
    payload: BinPayload


class CollectionEnvelope(_EnvelopeBase):
    kind: Literal["collection"] = "collection"
    payload: CollectionPayload


class HygieneEnvelope(_EnvelopeBase):
    kind: Literal["hygiene"] = "hygiene"
    payload: HygienePayload


Envelope = Annotated[
    TelemetryEnvelope
    | AlarmEnvelope
    | AvailabilityEnvelope
    | AccessEnvelope
    | BinEnvelope
    | CollectionEnvelope
    | HygieneEnvelope,
    Field(discriminator="kind"),
]
"""Any envelope; ``kind`` selects the payload model."""

EnvelopeModel = (
    TelemetryEnvelope
    | AlarmEnvelope
    | AvailabilityEnvelope
    | AccessEnvelope
    | BinEnvelope
    | CollectionEnvelope
    | HygieneEnvelope
)

ENVELOPE_ADAPTER: Final[TypeAdapter[EnvelopeModel]] = TypeAdapter(Envelope)

#: Kinds that are telemetry (may be dropped oldest-first under pressure) versus events (kept).
TELEMETRY_KINDS: Final = frozenset({"telemetry"})


def encode(envelope: EnvelopeModel) -> bytes:
    """UTF-8 JSON of an envelope."""
    return envelope.model_dump_json().encode()


def decode(data: bytes | bytearray | str) -> EnvelopeModel:
    """Parse and validate one envelope; :class:`~protocols.errors.DecodeError` names the field."""
    try:
        return ENVELOPE_ADAPTER.validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "envelope"
        raise DecodeError(f"invalid envelope: {where}: {first['msg']}") from err


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of :data:`Envelope` (draft 2020-12)."""
    schema = ENVELOPE_ADAPTER.json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:cityedge:schema:envelope:1",
        "title": "cityedge event envelope",
        "description": (__doc__ or "").strip().split("\n\n")[0],
        **schema,
    }


def utc_datetime(epoch_s: float) -> datetime:
    """An aware UTC datetime from Unix seconds (helper for builders of envelopes)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC)
