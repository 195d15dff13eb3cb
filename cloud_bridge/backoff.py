"""Capped, jittered exponential backoff for reconnects and restarts.

Delay n (from 0) is ``min(max_s, initial_s * multiplier**n)`` scaled by a random factor in
``[1 - jitter, 1]`` ("equal jitter" leaning low), so a fleet that lost its broker at the same
moment does not come back in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        if not 0 <= self.jitter <= 1 or self.multiplier < 1:
            raise ValueError("backoff needs 0 <= jitter <= 1 and multiplier >= 1")

    def next_delay(self) -> float:
        """The next delay in seconds; grows until ``max_s``."""
        base = min(self.max_s, self.initial_s * self.multiplier ** min(self.attempts, 64))
        self.attempts += 1
        return base * (1 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0
