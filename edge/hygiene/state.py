"""One tracked person's compliance over time, and when that is a violation (pure logic).

Each processed frame in which the person's face was seen gives a mask and a hair-cover
probability. They are smoothed by the median of the observations of the last ``smoothing_s``
seconds, so one misjudged frame changes nothing. The person is *non-compliant* while a required
item's smoothed probability is under ``threshold``. A *violation* is reported once, when that
has lasted ``violation_after_s`` (one person, one violation — not one per frame). Only after the
person has been compliant again for ``reset_after_s`` can a new violation be reported for them.

Frames where the face is not seen keep the state: a person who turns away neither starts nor
ends a violation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rules:
    require_mask: bool = True
    require_hair_cover: bool = True
    threshold: float = 0.5
    smoothing_s: float = 1.5
    violation_after_s: float = 3.0
    reset_after_s: float = 5.0


@dataclass(frozen=True)
class Verdict:
    violations: tuple[str, ...]  # "no_mask", "no_hair_cover"
    since: float
    duration_s: float
    mask: float | None
    cover: float | None


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass
class PersonState:
    rules: Rules
    obs: deque[tuple[float, float, float]] = field(default_factory=deque)
    bad_since: float | None = None
    good_since: float | None = None
    reported: bool = False

    def smoothed(self) -> tuple[float | None, float | None]:
        return _median([m for _, m, _ in self.obs]), _median([c for _, _, c in self.obs])

    def missing(self) -> tuple[str, ...]:
        mask, cover = self.smoothed()
        r = self.rules
        out: list[str] = []
        if r.require_mask and mask is not None and mask < r.threshold:
            out.append("no_mask")
        if r.require_hair_cover and cover is not None and cover < r.threshold:
            out.append("no_hair_cover")
        return tuple(out)

    def observe(self, now: float, mask: float, cover: float) -> Verdict | None:
        """Add one frame's judgement; returns a verdict when a violation is to be reported."""
        self.obs.append((now, mask, cover))
        while self.obs and now - self.obs[0][0] > self.rules.smoothing_s:
            self.obs.popleft()
        missing = self.missing()
        if not missing:
            self.bad_since = None
            if self.good_since is None:
                self.good_since = now
            if self.reported and now - self.good_since >= self.rules.reset_after_s:
                self.reported = False
            return None
        self.good_since = None
        if self.bad_since is None:
            self.bad_since = now
        if self.reported or now - self.bad_since < self.rules.violation_after_s:
            return None
        self.reported = True
        m, c = self.smoothed()
        return Verdict(missing, self.bad_since, now - self.bad_since, m, c)
