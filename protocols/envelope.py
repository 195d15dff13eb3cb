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

from protocols.errors import DecodeError

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
    """Base of every model of a contract: immutable, and unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


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


class TelemetryPayload(ContractModel):
    """The values read from one device in one poll."""

    readings: list[PointValue] = Field(min_length=1, description="Values read in this poll")


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


class LinkInfo(ContractModel):
    """Where an envelope stands on the gateway's link; set by the gateway as it publishes.

    ``session`` is the number in the gateway's birth and death messages (it grows by one per
    connection, like Sparkplug B's bdSeq); ``seq`` counts the envelopes published in that session
    from 1, so a gap shows a message lost between the gateway and the subscriber; ``pos`` is the
    envelope's position in the gateway's durable outbox, one more per envelope accepted, so a
    missing position is an envelope the outbox dropped under its disk budget (or lost). An
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


Envelope = Annotated[
    TelemetryEnvelope | AlarmEnvelope | AvailabilityEnvelope,
    Field(discriminator="kind"),
]
"""Any envelope; ``kind`` selects the payload model."""

EnvelopeModel = TelemetryEnvelope | AlarmEnvelope | AvailabilityEnvelope

ENVELOPE_ADAPTER: Final[TypeAdapter[EnvelopeModel]] = TypeAdapter(Envelope)

#: Kinds that are telemetry (may be dropped oldest-first under pressure) versus events (kept).
TELEMETRY_KINDS: Final = frozenset({"telemetry"})


def encode(envelope: EnvelopeModel) -> bytes:
    """UTF-8 JSON of an envelope."""
    return envelope.model_dump_json().encode()


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
