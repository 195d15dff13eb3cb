"""Typed values that flow from sources to apps inside the gateway."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reading:
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
