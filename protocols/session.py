"""Birth and death of a gateway's link, on ``cityedge/v1/{site}/{gateway}/state`` (retained).

On every connection a gateway takes a new session number (kept on disk, one more each time, as
Sparkplug B's bdSeq), registers a *death* message carrying it as its MQTT last will, and then
publishes a *birth* carrying the same number. The broker publishes the death when the connection
drops without a clean goodbye; on a clean stop the gateway publishes it itself. Both are retained,
so a subscriber that starts later still learns the last state.

A subscriber keeps the state of the highest session it has seen: a death of an older session that
arrives after a newer birth (the broker noticed the old connection late) changes nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import AwareDatetime, Field, TypeAdapter

from protocols.envelope import ContractModel, Ident, decode_with


class LinkState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class OutboxClassStats(ContractModel):
    """One class of the outbox (``telemetry`` or ``event``)."""

    depth: int = Field(ge=0, description="Envelopes waiting to be acknowledged by the broker")
    bytes: int = Field(ge=0, description="Bytes they take in the outbox's accounting")
    dropped: int = Field(ge=0, description="Envelopes dropped under the disk budget, ever")
    oldest_age_s: float | None = Field(
        default=None, description="Age of the oldest waiting envelope in seconds (none: empty)"
    )


class SetAsideOutbox(ContractModel):
    """An outbox file found damaged at start and set aside: renamed, kept for recovery."""

    file: str = Field(description="Where the damaged file was moved, on the gateway")
    reason: str = Field(description="What was wrong with it")
    time: AwareDatetime = Field(description="When it was set aside")
    last_pos: int = Field(
        ge=0,
        description="Positions up to this belong to the old file (or were skipped); the new "
        "outbox continues above it",
    )


class OutboxStats(ContractModel):
    """What the gateway's durable outbox holds (in births and in the ``outbox.stats`` reply)."""

    depth: int = Field(ge=0, description="Envelopes waiting, all classes")
    bytes: int = Field(ge=0, description="Bytes they take in the outbox's accounting")
    budget_bytes: int = Field(ge=1, description="The disk budget")
    dropped: int = Field(ge=0, description="Envelopes dropped under the disk budget, ever")
    last_pos: int = Field(ge=0, description="Position given to the newest envelope accepted")
    classes: dict[str, OutboxClassStats] = Field(description="Per class: telemetry, event")
    set_aside: list[SetAsideOutbox] | None = Field(
        default=None,
        description="Damaged outbox files this one replaced, newest last (absent: none)",
    )


class GatewayState(ContractModel):
    """A birth (``online``) or death (``offline``) of one session of a gateway's link."""

    state: LinkState = Field(description="'online' (birth) or 'offline' (death)")
    site: Ident = Field(description="Site of the gateway")
    gateway: Ident = Field(description="The gateway")
    session: int = Field(ge=0, description="Session number; one more on every connection")
    time: AwareDatetime = Field(
        description="When it was made (a death made as the will carries the connection's time)"
    )
    reason: str = Field(
        default="", description="For a death: 'connection lost' (the will) or 'shutdown'"
    )
    outbox: OutboxStats | None = Field(
        default=None, description="Births: what the outbox holds as the session starts"
    )


STATE_ADAPTER: Final[TypeAdapter[GatewayState]] = TypeAdapter(GatewayState)


def encode_state(state: GatewayState) -> bytes:
    """JSON without the optional fields that are not set (a reader of an older version of this
    contract then still accepts it)."""
    return state.model_dump_json(exclude_none=True).encode()


def decode_state(data: bytes | str) -> GatewayState:
    """Parse a birth or death; :class:`~protocols.errors.DecodeError` names the field."""
    return decode_with(STATE_ADAPTER, data, "state message")


class HostState(ContractModel):
    """An ingest worker's heartbeat on ``cityedge/host/{group}/{worker}`` (not retained: only a
    live one counts, so a broker restart cannot leave a stale "online" behind). ``offline`` is
    the worker's will and its goodbye on a clean stop."""

    state: LinkState = Field(description="'online' (heartbeat) or 'offline' (will, goodbye)")
    group: Ident = Field(description="Shared-subscription group of the worker")
    worker: Ident = Field(description="The worker")
    time: AwareDatetime = Field(description="When it was sent")
    interval_s: float = Field(gt=0, description="Heartbeats come this often while online")


HOST_ADAPTER: Final[TypeAdapter[HostState]] = TypeAdapter(HostState)


def decode_host(data: bytes | str) -> HostState:
    return decode_with(HOST_ADAPTER, data, "host state")
