"""App ``environment``: water and air monitoring stations, from readings of any source.

Per station device, on the readings' own times:

- **minute** aggregates (count, min, mean, max per point) of the readings in each clock
  minute; **hour** aggregates of the minute means, **day** aggregates (local days,
  ``utc_offset_h``) of the hour means. A mean is valid (data flag ``N``) when the period had
  enough data — GB 3095-2012 article 8 / table 4: at least 45 minutes of an hour and 20 hours of a
  day — else it is sent flagged ``B``;
- **water** (GB 3838-2002): each hour's and day's means are classed I..V; an hour whose mean
  misses the station's target class raises an alarm (one per excursion, cleared by the first
  valid hour back inside);
- **air** (GB 3095-2012, HJ 633-2012): hour means against the 1-hour limits, day means against
  the 24-hour limits and the day's highest 8-hour ozone mean against its 8-hour limit raise
  alarms; every hour and day carries the AQI, its category and primary pollutant(s).

A period is closed ``grace_s`` after its end (late readings of a closed period are counted
and dropped), also when no reading arrives any more (a dead device still gets its flagged hour).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from edge.environment import quality
from edge.environment.config import EnvironmentConfig, StationConfig
from edge.plugin import AppContext, Plugin
from edge.readings import ReadingBatch
from protocols import envelope as env

log = logging.getLogger(__name__)

MINUTE, HOUR, DAY = 60, 3600, 86400
VALID_MINUTES_PER_HOUR = 45
VALID_HOURS_PER_DAY = 20
VALID_HOURS_FOR_O3_8H = 6


@dataclass
class Stats:
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    unit: str | None = None

    def add(self, value: float, low: float | None = None, high: float | None = None) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value if low is None else low)
        self.high = max(self.high, value if high is None else high)

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass
class _Period:
    start: float
    points: dict[str, Stats] = field(default_factory=dict)


@dataclass
class _Station:
    config: StationConfig
    minute: _Period | None = None
    hours: dict[float, _Period] = field(default_factory=dict)  # hour start -> minute means
    days: dict[float, _Period] = field(default_factory=dict)  # day start -> hour means
    o3_hours: deque[float | None] = field(default_factory=lambda: deque(maxlen=8))
    day_o3_8h: dict[float, float] = field(default_factory=dict)
    day_o3_1h: dict[float, float] = field(default_factory=dict)
    raised: set[tuple[str, str]] = field(default_factory=set)
    closed_until: float = -math.inf  # end of the last closed minute
    late: int = 0


def _floor(t: float, size: float, offset: float = 0.0) -> float:
    return math.floor((t + offset) / size) * size - offset


class EnvironmentApp(Plugin):
    def __init__(self, config: EnvironmentConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stations = {s.device: _Station(s) for s in config.stations}
        self._offset = config.utc_offset_h * 3600

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(self._tick_forever())
            async for batch in self.ctx.inbox:
                await self.handle(batch)
            ticker.cancel()
        await self.close_due(math.inf)  # the inbox closed: send what is complete

    async def _tick_forever(self) -> None:
        while True:
            await self.ctx.clock.sleep(1.0)
            await self.close_due(self.ctx.clock.time())

    async def handle(self, batch: ReadingBatch) -> None:
        st = self.stations.get(batch.device)
        if st is None:
            return
        start = _floor(batch.time, MINUTE)
        if st.minute is not None and start > st.minute.start:
            await self._close_minute(st)
        if st.minute is None:
            if start < st.closed_until:
                st.late += 1  # its minute was already sent
                return
            st.minute = _Period(start)
        elif start < st.minute.start:
            st.late += 1
            return
        for r in batch.readings:
            if isinstance(r.value, bool):
                continue
            s = st.minute.points.setdefault(r.point, Stats(unit=r.unit))
            s.add(float(r.value))
        await self.close_due(batch.time)

    async def close_due(self, now: float) -> None:
        """Close every period that ended ``grace_s`` before ``now``."""
        grace = self.config.grace_s
        for st in self.stations.values():
            if st.minute is not None and st.minute.start + MINUTE + grace <= now:
                await self._close_minute(st)
            for start in sorted(h for h in st.hours if h + HOUR + grace <= now):
                await self._close_hour(st, st.hours.pop(start))
            for start in sorted(d for d in st.days if d + DAY + grace <= now):
                await self._close_day(st, st.days.pop(start))

    # -- minute ------------------------------------------------------------------------------

    async def _close_minute(self, st: _Station) -> None:
        minute, st.minute = st.minute, None
        if minute is None:
            return
        st.closed_until = minute.start + MINUTE
        if not minute.points:
            return
        hour = st.hours.setdefault(_floor(minute.start, HOUR), _Period(_floor(minute.start, HOUR)))
        for point, s in minute.points.items():
            hour.points.setdefault(point, Stats(unit=s.unit)).add(s.mean, s.low, s.high)
        if self.config.send_minutes:
            values = [self._stats(st, p, s, 1.0, "N") for p, s in minute.points.items()]
            await self._send(st, "minute", minute.start, MINUTE, values)

    # -- hour --------------------------------------------------------------------------------

    async def _close_hour(self, st: _Station, hour: _Period) -> None:
        day_start = _floor(hour.start, DAY, self._offset)
        day = st.days.setdefault(day_start, _Period(day_start))
        means: dict[str, float] = {}
        values = []
        for point, s in hour.points.items():
            valid = s.count >= VALID_MINUTES_PER_HOUR
            values.append(self._stats(st, point, s, s.count / 60, "N" if valid else "B"))
            if valid:
                day.points.setdefault(point, Stats(unit=s.unit)).add(s.mean, s.low, s.high)
                parameter = st.config.parameter_of(point)
                if parameter is not None:
                    means[parameter] = s.mean
        aqi = None
        if st.config.medium == "air":
            aqi = self._hour_aqi(st, day_start, means)
        await self._send(st, "hour", hour.start, HOUR, values, aqi)
        await self._check_limits(st, hour, means, "1h" if st.config.medium == "air" else "hour")

    def _hour_aqi(
        self, st: _Station, day_start: float, means: dict[str, float]
    ) -> env.AirQualityIndex | None:
        st.o3_hours.append(means.get("o3"))
        hour_means = {
            p: v for p, v in means.items() if p in ("so2", "no2", "co", "o3", "pm10", "pm2_5")
        }
        known = [v for v in st.o3_hours if v is not None]
        if len(known) >= VALID_HOURS_FOR_O3_8H:
            o3_8h = sum(known) / len(known)
            hour_means["o3_8h"] = o3_8h
            st.day_o3_8h[day_start] = max(st.day_o3_8h.get(day_start, 0.0), o3_8h)
        if "o3" in means:
            st.day_o3_1h[day_start] = max(st.day_o3_1h.get(day_start, 0.0), means["o3"])
        so2_day = next(
            (
                s.mean
                for p, s in st.days[day_start].points.items()
                if st.config.parameter_of(p) == "so2"
            ),
            None,
        )
        result = quality.hourly_aqi(hour_means, {"so2": so2_day} if so2_day is not None else None)
        return _aqi_model(result)

    # -- day ---------------------------------------------------------------------------------

    async def _close_day(self, st: _Station, day: _Period) -> None:
        values = []
        means: dict[str, float] = {}
        for point, s in day.points.items():
            valid = s.count >= VALID_HOURS_PER_DAY
            values.append(self._stats(st, point, s, s.count / 24, "N" if valid else "B"))
            parameter = st.config.parameter_of(point)
            if valid and parameter is not None:
                means[parameter] = s.mean
        aqi = None
        if st.config.medium == "air":
            daily = {p: v for p, v in means.items() if p in ("so2", "no2", "co", "pm10", "pm2_5")}
            if day.start in st.day_o3_8h:
                daily["o3_8h"] = st.day_o3_8h.pop(day.start)
                means["o3_8h"] = daily["o3_8h"]
            if day.start in st.day_o3_1h:
                daily["o3"] = st.day_o3_1h.pop(day.start)
            aqi = _aqi_model(quality.daily_aqi(daily))
        if values:
            await self._send(st, "day", day.start, DAY, values, aqi)
        await self._check_limits(st, day, means, "24h" if st.config.medium == "air" else "day")

    # -- limits ------------------------------------------------------------------------------

    async def _check_limits(
        self, st: _Station, period: _Period, means: dict[str, float], averaging: str
    ) -> None:
        cfg = st.config
        for parameter, mean in means.items():
            limit: tuple[float, Literal["above", "below"]] | None
            if cfg.medium == "water":
                if averaging != "hour":
                    continue  # water alarms follow the hourly means
                if parameter == "ph":
                    limit = (9.0, "above") if mean > 9 else (6.0, "below")
                else:
                    limit = quality.water_limit(parameter, cfg.water_class, cfg.lake)
                rule = f"GB 3838-2002 class {cfg.water_class}"
            else:
                avg = "8h" if parameter == "o3_8h" else averaging
                value = quality.air_limit(
                    "o3" if parameter == "o3_8h" else parameter, avg, cfg.air_grade
                )
                limit = None if value is None else (value, "above")
                rule = f"GB 3095-2012 grade {cfg.air_grade} {avg}"
            if limit is None:
                continue
            bound, direction = limit
            past = mean > bound if direction == "above" else mean < bound
            key = (parameter, rule)
            if past == (key in st.raised):
                continue
            if past:
                st.raised.add(key)
            else:
                st.raised.discard(key)
            point = next(
                (p for p, s in period.points.items() if cfg.parameter_of(p) == parameter), parameter
            )
            unit = period.points[point].unit if point in period.points else None
            state = env.AlarmState.RAISED if past else env.AlarmState.CLEARED
            log.log(
                logging.WARNING if past else logging.INFO,
                "station %s: %s %s %s (%s mean %.4g %s, limit %s)",
                cfg.device, rule, parameter, state.value, averaging, mean, unit or "", bound,
            )  # fmt: skip
            payload = env.AlarmPayload(
                rule=f"{rule} {parameter}",
                point=point if point in period.points else parameter.replace("o3_8h", "o3"),
                state=state,
                severity=env.Severity.MAJOR,
                value=mean,
                limit=bound,
                direction=direction,
                unit=unit,
                since=env.utc_datetime(period.start),
            )
            await self.ctx.emitter.send(self.ctx.emitter.alarm(cfg.device, period.start, payload))

    # -- output ------------------------------------------------------------------------------

    def _stats(
        self, st: _Station, point: str, s: Stats, coverage: float, flag: str
    ) -> env.PointStats:
        water_class = None
        parameter = st.config.parameter_of(point)
        if st.config.medium == "water" and parameter is not None and flag == "N":
            water_class = quality.water_class(parameter, s.mean, st.config.lake)
        return env.PointStats(
            point=point,
            unit=s.unit,
            count=s.count,
            coverage=min(1.0, coverage),
            min=s.low,
            avg=s.mean,
            max=s.high,
            flag=flag,
            water_class=water_class,
        )

    async def _send(
        self,
        st: _Station,
        period: Literal["minute", "hour", "day"],
        start: float,
        length: float,
        values: list[env.PointStats],
        aqi: env.AirQualityIndex | None = None,
    ) -> None:
        if not values:
            return
        classes = [v.water_class for v in values if v.water_class is not None]
        worst = max(classes, key=quality.class_rank) if classes and period != "minute" else None
        payload = env.AggregatePayload(
            period=period,
            start=env.utc_datetime(start),
            medium=st.config.medium,
            values=values,
            aqi=aqi,
            water_class=worst,
        )
        await self.ctx.emitter.send(
            self.ctx.emitter.aggregate(st.config.device, start + length, payload)
        )


def _aqi_model(result: quality.Aqi | None) -> env.AirQualityIndex | None:
    if result is None:
        return None
    return env.AirQualityIndex(
        aqi=result.aqi,
        level=result.level,
        category=result.category,
        primary=list(result.primary),
        over_limit=list(result.over_limit),
        iaqi=result.iaqi,
    )
