"""App ``thresholds``: one alarm and one clear per excursion, not a storm.

Per rule, a small state machine over the values as they arrive (times are the readings' own)::

    normal ──past limit──▶ pending ──still past after min_duration_s──▶ raised  (emit "raised")
       ▲                      │ back inside                                │ back inside by
       │                      ▼                                            ▼ hysteresis
       └──────────────── normal ◀──inside for clear_after_s── clearing     (emit "cleared")
                                                                 │ past the band again
                                                                 └──────▶ raised

A value inside the hysteresis band never clears a raised alarm, so a value hovering at the limit
gives one alarm and one clear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from edge.plugin import AppContext, Plugin
from edge.readings import ReadingBatch
from edge.thresholds.config import ThresholdRule, ThresholdsConfig
from protocols import envelope as env

log = logging.getLogger(__name__)


class _Phase(StrEnum):
    NORMAL = "normal"
    PENDING = "pending"
    RAISED = "raised"
    CLEARING = "clearing"


@dataclass
class Transition:
    state: env.AlarmState
    since: float


class ThresholdTracker:
    """The state machine of one rule. Pure: feed ``(value, time)``, get a transition or None."""

    def __init__(self, rule: ThresholdRule) -> None:
        self.rule = rule
        self.phase = _Phase.NORMAL
        self.since = 0.0
        self._clear_after = (
            rule.min_duration_s if rule.clear_after_s is None else rule.clear_after_s
        )

    def _past(self, v: float) -> bool:
        r = self.rule
        return v > r.limit if r.direction == "above" else v < r.limit

    def _back(self, v: float) -> bool:
        r = self.rule
        if r.direction == "above":
            return v <= r.limit - r.hysteresis
        return v >= r.limit + r.hysteresis

    def update(self, value: float, t: float) -> Transition | None:
        past = self._past(value)
        if self.phase is _Phase.NORMAL and past:
            self.phase, self.since = _Phase.PENDING, t
        elif self.phase is _Phase.PENDING and not past:
            self.phase = _Phase.NORMAL
        elif self.phase is _Phase.RAISED and self._back(value):
            self.phase, self.since = _Phase.CLEARING, t
        elif self.phase is _Phase.CLEARING and not self._back(value):
            self.phase = _Phase.RAISED
        if self.phase is _Phase.PENDING and t - self.since >= self.rule.min_duration_s:
            self.phase = _Phase.RAISED
            return Transition(env.AlarmState.RAISED, self.since)
        if self.phase is _Phase.CLEARING and t - self.since >= self._clear_after:
            self.phase = _Phase.NORMAL
            return Transition(env.AlarmState.CLEARED, self.since)
        return None

    @property
    def active(self) -> bool:
        return self.phase in (_Phase.RAISED, _Phase.CLEARING)


class ThresholdsApp(Plugin):
    def __init__(self, config: ThresholdsConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.trackers: dict[tuple[str, str], list[ThresholdTracker]] = {}
        for rule in config.rules:
            self.trackers.setdefault((rule.device, rule.point), []).append(ThresholdTracker(rule))

    async def run(self) -> None:
        async for batch in self.ctx.inbox:
            await self.handle(batch)

    async def handle(self, batch: ReadingBatch) -> None:
        for reading in batch.readings:
            for tracker in self.trackers.get((batch.device, reading.point), ()):
                change = tracker.update(float(reading.value), batch.time)
                if change is None:
                    continue
                rule = tracker.rule
                log.log(
                    logging.WARNING if change.state is env.AlarmState.RAISED else logging.INFO,
                    "device %s: alarm %s %s (value %s %s, limit %s)",
                    batch.device,
                    rule.rule_name,
                    change.state.value,
                    reading.value,
                    reading.unit or "",
                    rule.limit,
                )
                payload = env.AlarmPayload(
                    rule=rule.rule_name,
                    point=reading.point,
                    state=change.state,
                    severity=rule.severity,
                    value=float(reading.value),
                    limit=rule.limit,
                    direction=rule.direction,
                    unit=reading.unit,
                    since=env.utc_datetime(change.since),
                )
                emitter = self.ctx.emitter
                await emitter.send(emitter.alarm(batch.device, batch.time, payload))
