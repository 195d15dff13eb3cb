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
- Numbers are finite everywhere (telemetry values and every float field): NaN and infinity
  (also ``1e400``, which parses as infinity) are not JSON and are refused when decoding and when
  building a model; a source that reads one reports a bad reading instead. So every envelope
  that decodes encodes to bytes that decode to the same envelope.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar
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

from protocols.errors import DecodeError, EncodeError
from protocols.limits import shown

SCHEMA_VERSION: Final = 1

T = TypeVar("T")

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


class ContractModel(BaseModel):
    """Base of every model of a contract: immutable, unknown fields are refused, and so are
    NaN and infinity in every float field (JSON has neither: pydantic would write them as
    ``null``, which the same model then refuses — a message that cannot be read back)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PointValue(ContractModel):
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


class Origin(ContractModel):
    """Which report of a sensor node this is: a node names each report by its boot and
    sequence number and sends it again until the gateway has it; a repeat has the same pair."""

    boot: int = Field(ge=0, le=0xFFFFFFFF, description="The node's boot id (random per boot)")
    seq: int = Field(ge=0, le=0xFFFF, description="The report's sequence number in that boot")


class TelemetryPayload(ContractModel):
    """The values read from one device in one poll."""

    readings: list[PointValue] = Field(min_length=1, description="Values read in this poll")
    origin: Origin | None = Field(
        default=None,
        description="A sensor node's (boot, seq) of the report; null for polled devices",
    )


class AlarmState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class AlarmPayload(ContractModel):
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


class AvailabilityPayload(ContractModel):
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


class PassiveLiveness(ContractModel):
    """What the passive liveness models said about one frame of the face."""

    antispoof: float = Field(ge=0, le=1, description="human-antispoof score, higher is more real")
    liveness: float = Field(ge=0, le=1, description="human-liveness probability of 'live'")
    score: float = Field(ge=0, le=1, description="Their mean, compared with the limit")
    limit: float = Field(ge=0, le=1, description="passive_limit of the gate")


class ChallengeResult(ContractModel):
    """How an active challenge went (blinks and head turns asked in a random order)."""

    actions: list[Literal["blink", "turn_left", "turn_right"]] = Field(
        min_length=1, description="What was asked, in order ('turn_left': the person's left)"
    )
    done: int = Field(ge=0, description="How many of them were answered")
    outcome: Literal[
        "passed", "timeout", "wrong_action", "too_early", "face_lost", "flat", "other_person"
    ] = Field(
        description="passed; timeout (no answer in time); wrong_action; too_early (moved "
        "before a person could have read the prompt); face_lost; flat (the turns had no "
        "parallax: a photo or a screen); other_person (another face finished)"
    )
    seconds: float | None = Field(
        ge=0, description="From the start of the challenge to its outcome"
    )
    planarity: float | None = Field(
        ge=0,
        description="Parallax of the head turns (residual of the best plane over the eye "
        "distance); null without a turn",
    )
    planarity_limit: float = Field(ge=0, description="Smallest parallax taken as a head")


class LivenessCheck(ContractModel):
    """How the gate decided that the face was a live person (never an image)."""

    policy: Literal["off", "record", "passive", "challenge_on_doubt", "challenge_always"] = Field(
        description="off: not checked; record: models reported only; passive: the models "
        "decide; challenge_on_doubt: a challenge when the models doubt; challenge_always"
    )
    live: bool | None = Field(description="The verdict; null when not checked")
    passive: PassiveLiveness | None = Field(description="The passive models; null if not run")
    challenge: ChallengeResult | None = Field(description="The challenge; null if none ran")


AccessMethod = Literal["face", "pass", "card", "pin"]


class AccessPayload(ContractModel):
    """A gate decision: by face, visitor pass, card or PIN. Never carries a face image, a
    template, a card number, a PIN or a pass's text."""

    decision: AccessDecision = Field(
        description="'granted' (the gate relay was set and read back, or already open) or "
        "'denied' (refused, or the relay did not open: see 'relay')"
    )
    method: AccessMethod = Field(
        default="face",
        description="How the person asked to pass: face, pass (a signed visitor QR code), card "
        "or pin (a reader); every way writes this same event",
    )
    person: str = Field(
        pattern=r"^(unknown|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$",
        description="Enrolled person id, the visit id of a pass, or 'unknown'",
    )
    score: float | None = Field(
        default=None,
        description="Face: L2 distance to the closest enrolled template (lower is closer); "
        "null if none or not a face",
    )
    threshold: float | None = Field(
        default=None, description="Face: largest distance accepted as a match; null otherwise"
    )
    reason: str = Field(
        description="Why: matched, unknown face, not live, pass expired, card unknown, ..."
    )
    refusal: str | None = Field(
        default=None,
        max_length=32,
        description="A pass refused, in one stable word (malformed, unknown-key, forged, "
        "wrong-gate, not-yet-valid, expired, too-long, used); a card or PIN: unknown, locked",
    )
    liveness: LivenessCheck | None = Field(
        default=None,
        description="Face: liveness policy, passive scores, challenge; null for other methods",
    )
    latency_ms: float = Field(ge=0, description="From frame capture to relay command (or decision)")
    camera: Ident | None = Field(
        default=None, description="Camera that saw the face or the pass; null for a reader"
    )
    reader: Ident | None = Field(
        default=None, description="Card or PIN reader the credential came from; null otherwise"
    )
    pass_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{16}$",
        description="A pass: its random id (hex), the key of the gate's use counter",
    )
    pass_issuer: Ident | None = Field(
        default=None, description="A pass: the key id of its issuer, when the pass could be read"
    )
    uses_left: int | None = Field(
        default=None, ge=0, description="A pass accepted: uses left after this one"
    )
    relay: Literal["opened", "not_opened", "busy", "failed"] = Field(
        description="What happened at the gate relay: opened (set and read back), not_opened, "
        "busy (a gate cycle already runs), failed (the write failed or read back otherwise)"
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Model name -> name@version+sha256 prefix (face)"
    )


class PointStats(ContractModel):
    """One point over one period."""

    point: Ident = Field(description="Point name")
    unit: str | None = Field(default=None, description="Unit of min, avg and max")
    count: int = Field(ge=0, description="Samples (minute) or sub-periods (hour, day) with data")
    coverage: float = Field(ge=0, le=1, description="Share of the period that had data")
    min: float = Field(description="Smallest value")
    avg: float = Field(description="Mean (hour: of minute means; day: of hour means)")
    max: float = Field(description="Largest value")
    flag: str = Field(
        description="HJ 212 data flag: N valid; B too little data for a valid mean "
        "(GB 3095-2012: 45 minutes an hour, 20 hours a day)"
    )
    water_class: str | None = Field(
        default=None, description="GB 3838-2002 class of the mean (I..V, 'worse than V')"
    )


class AirQualityIndex(ContractModel):
    """HJ 633-2012 AQI of the period's means."""

    aqi: int = Field(ge=0, description="Air quality index (largest individual index)")
    level: int = Field(ge=1, le=6, description="Level 1 (excellent) to 6 (severely polluted)")
    category: str = Field(description="Category of the level")
    primary: list[str] = Field(description="Primary pollutant(s); none when the AQI is <= 50")
    over_limit: list[str] = Field(description="Pollutants whose index is above 100")
    iaqi: dict[str, int] = Field(description="Individual index per pollutant")


class AggregatePayload(ContractModel):
    """Minute, hour or day statistics of a monitoring station's points."""

    period: Literal["minute", "hour", "day"] = Field(description="Length of the period")
    start: AwareDatetime = Field(description="Start of the period")
    medium: Literal["water", "air", "other"] = Field(description="What the station monitors")
    values: list[PointStats] = Field(min_length=1, description="Statistics per point")
    aqi: AirQualityIndex | None = Field(default=None, description="Air: AQI of the hour or day")
    water_class: str | None = Field(
        default=None, description="Water: worst GB 3838-2002 class of the period's means"
    )


class SignalPlanPayload(ContractModel):
    """A traffic-signal gateway ended a stage of a junction it controls: what it got, what
    follows and why (one event per stage, so every plan change reaches the city brain)."""

    junction: Ident = Field(description="Junction (timing sheet) id")
    controller: str = Field(description="Controller that proposed the plan, e.g. 'cityedge'")
    phase: Ident = Field(description="Phase whose green ended")
    green_s: float = Field(ge=0, description="Green it got, seconds")
    next_phase: Ident = Field(description="Phase that follows")
    amber_s: float = Field(ge=0, description="Amber between them, seconds")
    all_red_s: float = Field(ge=0, description="All-red between them, seconds")
    reason: str = Field(description="Why the controller ended the green and chose the next")
    adjustments: list[str] = Field(
        default_factory=list,
        description="What the safety guard changed in the proposal, and why (empty: nothing)",
    )
    queues: dict[str, int] = Field(
        default_factory=dict, description="Vehicles halted at each detector when it decided"
    )
    decision_ms: float = Field(ge=0, description="Time the gateway took to decide, milliseconds")


class SignalFallbackState(StrEnum):
    ENTERED = "entered"
    LEFT = "left"


class SignalFallbackPayload(ContractModel):
    """A junction went to its controller's fixed plan (``entered``) or back under adaptive
    control (``left``)."""

    junction: Ident = Field(description="Junction (timing sheet) id")
    state: SignalFallbackState = Field(description="'entered' the fixed plan, or 'left' it")
    reason: str = Field(description="Why (a failed detector, the controller link lost, ...)")
    detectors: list[str] = Field(
        default_factory=list, description="Detectors found failed, if that is the reason"
    )


class BinEvent(StrEnum):
    NEEDS_COLLECTION = "needs_collection"
    EMPTIED = "emptied"


class BinPayload(ContractModel):
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


class CollectionItem(ContractModel):
    bin: Ident = Field(description="Bin id")
    fill: float = Field(ge=0, le=1, description="Current fill fraction")
    since: AwareDatetime = Field(description="When the bin crossed its collection threshold")
    overflowing: bool = Field(description="Rubbish over the rim or on the ground")


class CollectionPayload(ContractModel):
    """The bins a gateway watches that need collection now (the truck's list)."""

    bins: list[CollectionItem] = Field(description="Bins that need collection, fullest first")
    watched: int = Field(ge=0, description="How many bins the app watches")
    reason: Literal["change", "periodic"] = Field(
        description="Sent because the list changed, or as the periodic refresh"
    )


class Evidence(ContractModel):
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


class HygienePayload(ContractModel):
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


class LinkInfo(ContractModel):
    """Where an envelope stands on the gateway's link; set by the gateway as it publishes.

    ``session`` is the number in the gateway's birth and death messages (it grows by one per
    connection, like Sparkplug B's bdSeq); ``seq`` counts the envelopes published in that session
    from 1, so a gap shows a message lost between the gateway and the subscriber; ``pos`` is the
    envelope's position in the gateway's durable outbox, one more per envelope accepted, so a
    missing position is an envelope the outbox dropped under its disk budget or for a full disk,
    one of an outbox file set aside as damaged (named in the birth), or lost. Neither number is
    ever used twice by a gateway, though positions jump after an outbox was set aside. An
    envelope sent again after a reconnect keeps its ``id`` and ``pos`` but gets a new ``session``
    and ``seq``.
    """

    session: int = Field(ge=0, description="The gateway's session number (as in its birth)")
    seq: int = Field(ge=1, description="Sequence number within the session, from 1")
    pos: int = Field(ge=1, description="Position in the gateway's outbox, one more per envelope")


class _EnvelopeBase(ContractModel):
    id: UUID = Field(description="UUIDv7: unique, and sorts in time order")
    site: Ident = Field(description="Site the gateway serves")
    gateway: Ident = Field(description="Gateway that produced the envelope")
    device: Ident = Field(description="Device the envelope is about (the gateway's id for itself)")
    time: AwareDatetime = Field(description="When it happened, RFC 3339 with offset")
    schema_version: Literal[1] = Field(default=1, description="Version of this contract")
    link: LinkInfo | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Session, sequence number and outbox position, added as it is published",
    )


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


class AggregateEnvelope(_EnvelopeBase):
    kind: Literal["aggregate"] = "aggregate"
    payload: AggregatePayload


class SignalPlanEnvelope(_EnvelopeBase):
    kind: Literal["signal_plan"] = "signal_plan"
    payload: SignalPlanPayload


class SignalFallbackEnvelope(_EnvelopeBase):
    kind: Literal["signal_fallback"] = "signal_fallback"
    payload: SignalFallbackPayload


class BinEnvelope(_EnvelopeBase):
    kind: Literal["bin"] = "bin"
    payload: BinPayload


class CollectionEnvelope(_EnvelopeBase):
    kind: Literal["collection"] = "collection"
    payload: CollectionPayload


class HygieneEnvelope(_EnvelopeBase):
    kind: Literal["hygiene"] = "hygiene"
    payload: HygienePayload


# One line per kind (the comments keep the formatter from joining them), so areas adding
# kinds touch separate lines.
EnvelopeModel = (
    TelemetryEnvelope  # sources: one poll of one device
    | AlarmEnvelope  # thresholds and other apps
    | AvailabilityEnvelope  # sources: a device stopped answering / answers again
    | AccessEnvelope  # face access: a gate decision
    | AggregateEnvelope  # environment: minute / hour / day statistics
    | SignalPlanEnvelope  # traffic: a stage ended under adaptive control
    | SignalFallbackEnvelope  # traffic: fixed plan taken over, or control taken back
    | BinEnvelope  # waste: a bin needs collection / was emptied / overflows
    | CollectionEnvelope  # waste: the collection list changed
    | HygieneEnvelope  # food factory: a hygiene violation in a clean zone
)

Envelope = Annotated[EnvelopeModel, Field(discriminator="kind")]
"""Any envelope; ``kind`` selects the payload model."""

ENVELOPE_ADAPTER: Final[TypeAdapter[EnvelopeModel]] = TypeAdapter(Envelope)

#: Kinds that are telemetry (may be dropped oldest-first under pressure) versus events (kept).
TELEMETRY_KINDS: Final = frozenset({"telemetry"})


def encode(envelope: EnvelopeModel) -> bytes:
    """UTF-8 JSON of an envelope."""
    return envelope.model_dump_json().encode()


def with_link(encoded: bytes, session: int, seq: int, pos: int) -> bytes:
    """``encoded`` (what :func:`encode` made of an envelope without ``link``) with its
    :class:`LinkInfo` added as the last member, without parsing it again: the gateway sends
    each envelope stored in its outbox this way, once per session.

    The result decodes to the same envelope with ``link`` set. Raises
    :class:`~protocols.errors.EncodeError` for bytes that do not end a JSON object, or for
    numbers that are not what :class:`LinkInfo` allows.
    """
    if not encoded.endswith(b"}") or session < 0 or seq < 1 or pos < 1:
        raise EncodeError(
            f"cannot add link (session {session}, seq {seq}, pos {pos}) to "
            f"{shown(encoded[-16:])}: expected an encoded envelope and session >= 0, seq and "
            "pos >= 1"
        )
    return b'%s,"link":{"session":%d,"seq":%d,"pos":%d}}' % (encoded[:-1], session, seq, pos)


def decode_with(adapter: TypeAdapter[T], data: bytes | bytearray | str, what: str) -> T:
    """Parse JSON with ``adapter``; :class:`~protocols.errors.DecodeError` names the field."""
    try:
        return adapter.validate_json(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise DecodeError(f"invalid {what}: {where}: {first['msg']}") from err


def decode(data: bytes | bytearray | str) -> EnvelopeModel:
    """Parse and validate one envelope; :class:`~protocols.errors.DecodeError` names the field."""
    return decode_with(ENVELOPE_ADAPTER, data, "envelope")


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


# -- envelopes made in bulk: built as bytes once ----------------------------------------------

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FRAGMENT_CACHE_MAX: Final = 65_536


@dataclass(frozen=True, slots=True)
class Encoded:
    """An envelope already in its wire form (UTF-8 JSON that :func:`decode` accepts), made once
    where envelopes are made in bulk (telemetry: :class:`TelemetryEncoder`). It carries what
    routing needs (``kind``, ``site``, ``gateway``, ``device``, ``id``), so nothing parses the
    bytes back; a consumer that needs the model calls :meth:`model`."""

    kind: str
    site: str
    gateway: str
    device: str
    id: str
    data: bytes

    def model(self) -> EnvelopeModel:
        return decode(self.data)


#: What the gateway hands its sinks: a model, or an envelope already encoded.
Outgoing = EnvelopeModel | Encoded


def wire_bytes(item: Outgoing) -> bytes:
    """The UTF-8 JSON of ``item`` (built now for a model, as it is for an :class:`Encoded`)."""
    return item.data if isinstance(item, Encoded) else encode(item)


def as_model(item: Outgoing) -> EnvelopeModel:
    """``item`` as a model (decoded for an :class:`Encoded`)."""
    return item.model() if isinstance(item, Encoded) else item


def json_time(epoch_s: float) -> str:
    """Unix seconds as the envelope's ``time`` is written: RFC 3339, UTC, ``Z``, microseconds
    when there are any (as pydantic writes an aware datetime)."""
    text = datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()
    return text[:-6] + "Z"


class _JsonClock:
    """:func:`json_time` for times that come in order, as a gateway's polls do: the date and
    time of day are made once per second, the microseconds each time. The same text as
    :func:`json_time` (rounded as ``datetime.fromtimestamp`` rounds: half to even)."""

    __slots__ = ("_head", "_second")

    def __init__(self) -> None:
        self._second: int | None = None
        self._head = ""

    def __call__(self, epoch_s: float) -> str:
        second = math.floor(epoch_s)
        micro = round((epoch_s - second) * 1e6)
        if micro >= 1_000_000 or second != self._second:  # rounds up into the next second
            text = json_time(epoch_s)
            self._second, self._head = second + (micro >= 1_000_000), text[:19]
            return text
        return f"{self._head}.{micro:06d}Z" if micro else f"{self._head}Z"


class TelemetryEncoder:
    """Writes ``telemetry`` envelopes straight to bytes that decode to the same
    :class:`TelemetryEnvelope` the model would give: the per-point parts of the JSON (point name
    and unit) are made and checked once per point, the values each time.

    Raises :class:`ValueError` as the model would: a point name that is not an :data:`Ident`, a
    value that is not a bool, an int or a finite float, no readings."""

    def __init__(self, site: str, gateway: str) -> None:
        for what, name in (("site", site), ("gateway", gateway)):
            if not _IDENT.match(name):
                raise ValueError(f"{what} {name!r} is not an identifier")
        self.site = site
        self.gateway = gateway
        self._head = f',"site":{_js(site)},"gateway":{_js(gateway)},"device":'
        self._devices: dict[str, str] = {}
        self._points: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._time = _JsonClock()

    def encode(
        self,
        id: str,
        device: str,
        time: float,
        readings: Iterable[tuple[str, bool | int | float, str | None]],
        origin: tuple[int, int] | None = None,
    ) -> Encoded:
        """The envelope of one poll of ``device`` (``readings``: point, value, unit; ``origin``:
        a sensor node's (boot, seq) of the report)."""
        dev = self._devices.get(device)
        if dev is None:
            if not _IDENT.match(device):
                raise ValueError(f"device {device!r} is not an identifier")
            if len(self._devices) >= _FRAGMENT_CACHE_MAX:
                self._devices.clear()
            dev = self._devices[device] = _js(device)
        points = self._points
        parts = []
        for point, value, unit in readings:
            frag = points.get((point, unit))
            if frag is None:
                frag = self._fragment(point, unit)
            if value is True:
                text = "true"
            elif value is False:
                text = "false"
            elif type(value) is int:
                text = str(value)
            elif type(value) is float and value - value == 0.0:  # finite
                text = repr(value)
            else:
                text = _number(point, value)
            parts.append(frag[0] + text + frag[1])
        if not parts:
            raise ValueError("a telemetry envelope needs at least one reading")
        tail = "}"
        if origin is not None:
            boot, seq = origin
            if not (0 <= boot <= 0xFFFFFFFF and 0 <= seq <= 0xFFFF):
                raise ValueError(f"origin {origin}: boot must fit u32, seq u16")
            tail = f',"origin":{{"boot":{int(boot)},"seq":{int(seq)}}}}}'
        data = (
            f'{{"id":"{id}"{self._head}{dev},"time":"{self._time(time)}",'
            f'"schema_version":1,"kind":"telemetry","payload":{{"readings":[{",".join(parts)}]{tail}}}'
        ).encode()
        return Encoded("telemetry", self.site, self.gateway, device, id, data)

    def _fragment(self, point: str, unit: str | None) -> tuple[str, str]:
        if not _IDENT.match(point):
            raise ValueError(f"point {point!r} is not an identifier")
        if len(self._points) >= _FRAGMENT_CACHE_MAX:  # names from outside (CoAP): bounded
            self._points.clear()
        frag = (f'{{"point":"{point}","value":', f',"unit":{_js(unit)}}}')
        self._points[point, unit] = frag
        return frag


def _js(value: str | None) -> str:
    return json.dumps(value, ensure_ascii=False)


def _number(point: str, value: object) -> str:
    """A value that is not a plain bool, int or finite float: subclasses as their base type;
    anything else is refused as the model refuses it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float) and math.isfinite(value):
        return repr(float(value))
    raise ValueError(f"point {point}: value {value!r} is not a bool, an integer or a finite number")
