"""Typed values that flow from sources to apps inside the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Reading(NamedTuple):
    """One point's value. A named tuple, not a frozen dataclass: a gateway makes one per point
    per poll, and a tuple is made several times faster (and is ``(point, value, unit)``, what
    the telemetry encoder takes)."""

    point: str
    value: bool | int | float
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """The values one poll (or one notification) of one device produced."""

    source: str
    device: str
    time: float  # Unix seconds, from the injected clock
    readings: tuple[Reading, ...]

    def value_of(self, point: str) -> Reading | None:
        for r in self.readings:
            if r.point == point:
                return r
        return None
