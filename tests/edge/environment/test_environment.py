"""The environment app on the virtual clock: aggregates, validity flags, water classes, limits
and the AQI carried by the hourly and daily data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from edge.channel import Channel
from edge.clock import VirtualClock
from edge.environment.app import EnvironmentApp
from edge.environment.config import EnvironmentConfig
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env
from tests.edge import contexts

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC (08:00 in China): a whole hour and minute


class Rig:
    def __init__(self, **config: Any) -> None:
        cfg = {"type": "environment", "name": "env", "grace_s": 0, **config}
        self.config = EnvironmentConfig.model_validate(cfg)
        self.clock = VirtualClock(start_wall=T0)
        built = contexts.app("env", clock=self.clock, inbox=Channel("in", 10))
        self.events = built.events
        self.app = EnvironmentApp(self.config, built.ctx)

    async def feed(
        self, device: str, start: float, seconds: float, step: float, **values: float
    ) -> None:
        t = start
        while t < start + seconds:
            await self.app.handle(
                ReadingBatch(
                    "src", device, t, tuple(Reading(k, v, UNITS.get(k)) for k, v in values.items())
                )
            )
            t += step

    def aggregates(self, period: str) -> list[env.AggregatePayload]:
        return [
            e.payload
            for e in self.events
            if isinstance(e, env.AggregateEnvelope) and e.payload.period == period
        ]

    def alarms(self) -> list[env.AlarmPayload]:
        return [e.payload for e in self.events if isinstance(e, env.AlarmEnvelope)]


UNITS = {
    "dissolved_oxygen": "mg/L",
    "ph": "pH",
    "pm2_5": "µg/m³",
    "pm10": "µg/m³",
    "no2": "µg/m³",
    "so2": "µg/m³",
    "o3": "µg/m³",
}
WATER = {"stations": [{"device": "river", "medium": "water", "water_class": "III"}]}
AIR = {"stations": [{"device": "air", "medium": "air"}], "send_minutes": False}


def by_point(values: Iterable[env.PointStats]) -> dict[str, env.PointStats]:
    return {v.point: v for v in values}


async def test_minute_statistics() -> None:
    rig = Rig(**WATER)
    for i, v in enumerate([7.0, 7.2, 6.8, 7.4, 7.1, 7.5]):
        await rig.app.handle(ReadingBatch("src", "river", T0 + 10 * i, (Reading("ph", v, "pH"),)))
    await rig.app.close_due(T0 + 60)
    (minute,) = rig.aggregates("minute")
    (ph,) = minute.values
    assert (ph.count, ph.min, ph.max, ph.flag, ph.unit) == (6, 6.8, 7.5, "N", "pH")
    assert ph.avg == pytest.approx(7.1666, abs=1e-3)
    assert minute.start.timestamp() == T0


async def test_hour_from_minute_means_with_class_and_validity() -> None:
    rig = Rig(**WATER)
    await rig.feed("river", T0, 3600, 10, dissolved_oxygen=5.5, ph=7.4)
    await rig.feed(
        "river", T0 + 3600, 30 * 60, 10, dissolved_oxygen=8.0, ph=7.4
    )  # half an hour only
    await rig.app.close_due(T0 + 7200)
    first, second = rig.aggregates("hour")
    do = by_point(first.values)["dissolved_oxygen"]
    assert (do.count, do.coverage, do.avg, do.flag, do.water_class) == (60, 1.0, 5.5, "N", "III")
    assert first.water_class == "III"
    do2 = by_point(second.values)["dissolved_oxygen"]
    assert (do2.count, do2.flag, do2.water_class) == (30, "B", None)  # under 45 minutes: not valid


async def test_water_alarm_raised_once_and_cleared_by_the_first_good_hour() -> None:
    rig = Rig(**WATER)
    for hour, do in enumerate([4.0, 4.5, 6.0]):
        await rig.feed("river", T0 + hour * 3600, 3600, 30, dissolved_oxygen=do)
    await rig.app.close_due(T0 + 3 * 3600)
    alarms = rig.alarms()
    assert [(a.state, a.value, a.limit, a.direction) for a in alarms] == [
        (env.AlarmState.RAISED, 4.0, 5.0, "below"),
        (env.AlarmState.CLEARED, 6.0, 5.0, "below"),
    ]
    assert alarms[0].rule == "GB 3838-2002 class III dissolved_oxygen" and alarms[0].unit == "mg/L"
    assert [h.water_class for h in rig.aggregates("hour")] == ["IV", "IV", "II"]


async def test_hourly_aqi_and_primary_pollutant_are_sent_with_the_hour() -> None:
    rig = Rig(**AIR)
    await rig.feed("air", T0, 3600, 60, pm2_5=80, pm10=180, no2=150)
    await rig.app.close_due(T0 + 3600)
    (hour,) = rig.aggregates("hour")
    assert hour.aqi is not None
    assert (hour.aqi.aqi, hour.aqi.primary, hour.aqi.category) == (
        115,
        ["pm10"],
        "lightly polluted",
    )
    assert hour.aqi.iaqi == {"pm2_5": 107, "pm10": 115, "no2": 75}
    assert not rig.alarms()  # no 1-hour limit for particles; NO2 150 < 200


async def test_air_one_hour_limit_alarm() -> None:
    rig = Rig(**AIR)
    await rig.feed("air", T0, 3600, 60, so2=600)
    await rig.app.close_due(T0 + 3600)
    (alarm,) = rig.alarms()
    assert (alarm.rule, alarm.value, alarm.limit) == ("GB 3095-2012 grade 2 1h so2", 600.0, 500.0)


async def test_day_aggregate_aqi_and_24h_limit() -> None:
    rig = Rig(**{**AIR, "utc_offset_h": 0})
    await rig.feed("air", T0, 24 * 3600, 60, pm2_5=80, o3=120)
    await rig.app.close_due(T0 + 24 * 3600)
    (day,) = rig.aggregates("day")
    assert len(rig.aggregates("hour")) == 24
    pm = by_point(day.values)["pm2_5"]
    assert (pm.count, pm.flag, pm.avg) == (24, "N", 80.0)
    assert day.aqi is not None and day.aqi.aqi == 107 and day.aqi.primary == ["pm2_5"]
    assert (
        day.aqi.iaqi["o3_8h"] == 67
    )  # O3 8-hour 120: (100-50)/(160-100)*(120-100)+50 = 66.7 -> 67
    rules = [a.rule for a in rig.alarms()]
    assert "GB 3095-2012 grade 2 24h pm2_5" in rules


async def test_a_dead_device_still_gets_its_hour_flagged_and_late_data_is_dropped() -> None:
    rig = Rig(**WATER)
    await rig.feed("river", T0, 20 * 60, 10, ph=7.0)  # then silence
    await rig.app.close_due(T0 + 3600 + 1)
    (hour,) = rig.aggregates("hour")
    assert by_point(hour.values)["ph"].flag == "B"
    await rig.app.handle(ReadingBatch("src", "river", T0 + 100, (Reading("ph", 7.0),)))
    assert rig.app.stations["river"].late == 1


def test_config_refuses_unknown_parameters_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match='did you mean "dissolved_oxygen"'):
        EnvironmentConfig.model_validate(
            {
                "type": "environment",
                "name": "e",
                "stations": [
                    {"device": "r", "medium": "water", "points": {"do": "disolved_oxygen"}}
                ],
            }
        )
