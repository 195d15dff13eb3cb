"""Typed values that flow from sources to apps inside the gateway."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


class Reading(NamedTuple):
    """One point's value. A named tuple, not a frozen dataclass: a gateway makes one per point
    per poll, and a tuple is made several times faster (and is ``(point, value, unit)``, what
    the telemetry encoder takes)."""

    point: str
    value: bool | int | float
    unit: str | None = None


class ReadingBatch(NamedTuple):
    """The values one poll (or one notification) of one device produced. A named tuple, as
    :class:`Reading` is: one is made per poll (a frozen dataclass took 1.3 us to make)."""

    source: str
    device: str
    time: float  # Unix seconds, from the injected clock
    readings: tuple[Reading, ...]
    # a sensor node's report: its (boot, seq), and what to call once the telemetry of this
    # batch is in every durable outbox of the gateway (the node's end-to-end acknowledgement)
    origin: tuple[int, int] | None = None
    receipt: Callable[[], None] | None = None

    def value_of(self, point: str) -> Reading | None:
        for r in self.readings:
            if r.point == point:
                return r
        return None


@dataclass(frozen=True, slots=True)
class Credential:
    """A card or PIN presented at a reader: in memory, from the reader source to the apps that
    follow it (:meth:`~edge.config.base.PluginConfig.wants_credentials`) — never a reading,
    never telemetry, never logged (``repr`` hides the value)."""

    reader: str
    kind: str  # "card" or "pin"
    value: str  # canonical text: "FACILITY:NUMBER" for a card, the digits of a PIN
    time: float  # Unix seconds, from the injected clock
    mono: float  # monotonic seconds when it was read (for the decision latency)

    def __repr__(self) -> str:
        return f"Credential(reader={self.reader!r}, kind={self.kind!r}, value=<hidden>)"
