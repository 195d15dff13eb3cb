"""One bin's fill level over time: smoothing, fusion of camera and sensor, and its events.

Pure logic (no I/O, times passed in), so it is tested with made-up observations:

- camera observations (fill, overflow probability) are kept for ``window_s`` seconds and
  smoothed by their *median* — a person walking past or a bag held over the bin moves a few
  frames, not the median;
- the level sensor's latest reading (the ultrasonic node of issue 6, or any device/point that
  reports a fill fraction or percentage) counts while younger than ``max_age_s``;
- the bin's fill is the weighted mean of the fresh estimates (camera and sensor weights);
- events, with hysteresis so one crossing is one event:

  - ``needs_collection`` once when the fill reaches ``collect_at``;
  - ``emptied`` once when, after having been at least ``rearm_at`` full since the last
    emptying, the fill falls below ``emptied_below`` (a bin emptied early also counts);
  - the overflow alarm is *raised* once the smoothed overflow probability has stayed at or
    above ``overflow_at`` for ``overflow_for_s``, and *cleared* once it is below
    ``overflow_clear``.

A bin with no fresh estimate keeps its state and emits nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Event = Literal["needs_collection", "emptied", "overflow_raised", "overflow_cleared"]


@dataclass(frozen=True)
class Thresholds:
    collect_at: float = 0.8
    emptied_below: float = 0.25
    rearm_at: float = 0.5
    overflow_at: float = 0.6
    overflow_clear: float = 0.3
    overflow_for_s: float = 30.0
    window_s: float = 120.0
    max_age_s: float = 3600.0
    camera_weight: float = 1.0
    sensor_weight: float = 1.0


@dataclass(frozen=True)
class Change:
    event: Event
    time: float
    fill: float
    threshold: float


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass
class BinState:
    thresholds: Thresholds
    camera_obs: deque[tuple[float, float, float]] = field(default_factory=deque)
    sensor: tuple[float, float] | None = None  # (time, fill)
    needs_collection: bool = False
    needs_since: float | None = None
    peak: float = 0.0  # highest fill since the last emptying
    overflowing: bool = False
    overflow_since: float | None = None
    fill: float | None = None
    last_camera_time: float | None = None

    # -- estimates ---------------------------------------------------------------------------
    def camera_fill(self, now: float) -> float | None:
        fresh = [f for t, f, _ in self.camera_obs if now - t <= self.thresholds.window_s]
        return _median(fresh) if fresh else None

    def overflow(self, now: float) -> float | None:
        fresh = [o for t, _, o in self.camera_obs if now - t <= self.thresholds.window_s]
        return _median(fresh) if fresh else None

    def sensor_fill(self, now: float) -> float | None:
        if self.sensor is None or now - self.sensor[0] > self.thresholds.max_age_s:
            return None
        return self.sensor[1]

    def fused(self, now: float) -> float | None:
        th = self.thresholds
        parts = [
            (v, w)
            for v, w in (
                (self.camera_fill(now), th.camera_weight),
                (self.sensor_fill(now), th.sensor_weight),
            )
            if v is not None and w > 0
        ]
        if not parts:
            return None
        return sum(v * w for v, w in parts) / sum(w for _, w in parts)

    # -- inputs ------------------------------------------------------------------------------
    def observe_camera(self, now: float, fill: float, overflow: float) -> list[Change]:
        self.camera_obs.append((now, min(1.0, max(0.0, fill)), min(1.0, max(0.0, overflow))))
        while self.camera_obs and now - self.camera_obs[0][0] > self.thresholds.window_s:
            self.camera_obs.popleft()
        self.last_camera_time = now
        return self._update(now)

    def observe_sensor(self, now: float, fill: float) -> list[Change]:
        self.sensor = (now, min(1.0, max(0.0, fill)))
        return self._update(now)

    # -- decisions ---------------------------------------------------------------------------
    def _update(self, now: float) -> list[Change]:
        th = self.thresholds
        fill = self.fused(now)
        if fill is None:
            return []
        self.fill = fill
        changes: list[Change] = []
        self.peak = max(self.peak, fill)
        if not self.needs_collection and fill >= th.collect_at:
            self.needs_collection = True
            self.needs_since = now
            changes.append(Change("needs_collection", now, fill, th.collect_at))
        elif self.peak >= th.rearm_at and fill < th.emptied_below:
            self.needs_collection = False
            self.needs_since = None
            self.peak = fill
            changes.append(Change("emptied", now, fill, th.emptied_below))
        over = self.overflow(now)
        if over is not None:
            if not self.overflowing and over >= th.overflow_at:
                if self.overflow_since is None:
                    self.overflow_since = now
                if now - self.overflow_since >= th.overflow_for_s:
                    self.overflowing = True
                    changes.append(Change("overflow_raised", now, over, th.overflow_at))
            elif not self.overflowing:
                self.overflow_since = None
            elif over < th.overflow_clear:
                self.overflowing = False
                self.overflow_since = None
                changes.append(Change("overflow_cleared", now, over, th.overflow_clear))
        return changes
