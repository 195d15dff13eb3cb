"""Availability of a polled device, decided in one place (as a Home Assistant coordinator does).

A device becomes *unavailable* after ``threshold`` consecutive failed polls — once, not once per
failed poll — and *recovered* at the first good poll after that. A device that has never
answered since start becomes unavailable the same way. The owner logs and emits the returned
change; nothing is returned while the state holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class AvailabilityChange:
    state: str  # "unavailable" | "recovered" (protocols.envelope.AvailabilityState values)
    reason: str
    failed_polls: int
    # Unix seconds: the last good poll (or start) when unavailable; the first failure when recovered
    since: float


class Availability:
    def __init__(self, threshold: int, started_at: float) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.health = Health.UNKNOWN
        self.failures = 0
        self.last_ok = started_at
        self.first_failure: float | None = None
        self.last_error = ""

    def success(self, now: float) -> AvailabilityChange | None:
        change = None
        if self.health is Health.DOWN:
            change = AvailabilityChange(
                "recovered", "answers again", self.failures, self.first_failure or now
            )
        self.health, self.failures, self.first_failure, self.last_ok = Health.UP, 0, None, now
        return change

    def failure(self, now: float, error: str) -> AvailabilityChange | None:
        self.failures += 1
        self.last_error = error
        if self.first_failure is None:
            self.first_failure = now
        if self.health is not Health.DOWN and self.failures >= self.threshold:
            self.health = Health.DOWN
            return AvailabilityChange("unavailable", error, self.failures, self.last_ok)
        return None
