"""HJ 633-2012 AQI, GB 3095-2012 limits and GB 3838-2002 classes.

HJ 633-2012 prints its method (table 1, formula 1, the rounding and primary-pollutant rules)
but no numeric worked example; the examples below are worked by hand from table 1 and formula 1,
the arithmetic shown on each line, and include every rule of the standard's notes.
"""

from __future__ import annotations

import pytest

from edge.environment import quality
from edge.environment.quality import iaqi

# (pollutant, averaging, concentration, IAQI, how)
IAQI_EXAMPLES = [
    ("pm2_5", "24h", 0, 0, "bottom of the table"),
    ("pm2_5", "24h", 35, 50, "a breakpoint is its own index"),
    ("pm2_5", "24h", 75, 100, "a breakpoint"),
    ("pm2_5", "24h", 20, 29, "(50-0)/(35-0)*(20-0)+0 = 28.57 -> 29 (rounded up)"),
    ("pm2_5", "24h", 35.1, 51, "(100-50)/(75-35)*(35.1-35)+50 = 50.125 -> 51"),
    ("pm2_5", "24h", 80, 107, "(150-100)/(115-75)*(80-75)+100 = 106.25 -> 107"),
    ("pm2_5", "24h", 500, 500, "top of the table"),
    ("pm2_5", "24h", 620, 500, "beyond the table: 500"),
    ("pm10", "24h", 180, 115, "(150-100)/(250-150)*(180-150)+100 = 115"),
    ("so2", "1h", 400, 86, "(100-50)/(500-150)*(400-150)+50 = 85.71 -> 86"),
    ("so2", "24h", 900, 213, "(300-200)/(1600-800)*(900-800)+200 = 212.5 -> 213"),
    ("no2", "1h", 150, 75, "(100-50)/(200-100)*(150-100)+50 = 75"),
    ("co", "1h", 12, 104, "(150-100)/(35-10)*(12-10)+100 = 104"),
    ("co", "24h", 3, 75, "(100-50)/(4-2)*(3-2)+50 = 75"),
    ("o3", "1h", 180, 75, "(100-50)/(200-160)*(180-160)+50 = 75"),
    ("o3", "8h", 170, 110, "(150-100)/(215-160)*(170-160)+100 = 109.09 -> 110"),
    ("so2", "1h", 900, None, "note 2: 1-hour SO2 above 800 is not indexed by the 1-hour rows"),
    ("o3", "8h", 850, None, "note 3: 8-hour O3 above 800 is not indexed by the 8-hour rows"),
]


@pytest.mark.parametrize(
    ("pollutant", "averaging", "c", "expected", "_how"),
    IAQI_EXAMPLES,
    ids=[e[4] for e in IAQI_EXAMPLES],
)
def test_iaqi_worked_examples(
    pollutant: str, averaging: str, c: float, expected: int | None, _how: str
) -> None:
    assert iaqi(pollutant, averaging, c) == expected


def test_every_breakpoint_maps_to_its_index() -> None:
    for (p, avg), bps in quality.BREAKPOINTS.items():
        for bp, idx in zip(bps, quality.IAQI_STEPS, strict=False):
            assert iaqi(p, avg, bp) == idx, (p, avg, bp)


def test_hourly_aqi_primary_pollutant_and_category() -> None:
    # PM2.5 80 -> 107, PM10 180 -> 115, NO2 150 -> 75, CO 0.8 -> 8: AQI 115, PM10 primary
    a = quality.hourly_aqi({"pm2_5": 80, "pm10": 180, "no2": 150, "co": 0.8})
    assert a is not None
    assert (a.aqi, a.level, a.category, a.colour) == (115, 3, "lightly polluted", "orange")
    assert a.primary == ("pm10",) and a.over_limit == ("pm10", "pm2_5")
    assert a.iaqi == {"pm2_5": 107, "pm10": 115, "no2": 75, "co": 8}


def test_two_pollutants_can_share_primary() -> None:
    a = quality.hourly_aqi({"pm2_5": 115, "pm10": 250})  # both index 150
    assert a is not None and a.aqi == 150 and a.primary == ("pm10", "pm2_5")


def test_no_primary_pollutant_at_or_below_50() -> None:
    a = quality.hourly_aqi({"pm2_5": 35, "no2": 40})  # 50 and 20
    assert a is not None and a.aqi == 50 and a.primary == () and a.category == "excellent"


def test_so2_above_800_in_an_hour_is_indexed_by_its_24h_mean() -> None:
    a = quality.hourly_aqi({"so2": 900}, day={"so2": 400})
    # 24-hour rows: (150-100)/(475-150)*(400-150)+100 = 138.46 -> 139
    assert a is not None and a.iaqi == {"so2": 139}


def test_daily_o3_8h_above_800_uses_the_1h_index() -> None:
    a = quality.daily_aqi({"o3_8h": 850, "o3": 900, "pm2_5": 30})
    # O3 1h 900: (400-300)/(1000-800)*(900-800)+300 = 350
    assert a is not None and a.iaqi["o3_8h"] == 350 and a.aqi == 350 and a.level == 6


@pytest.mark.parametrize(("c", "error"), [(-1, ValueError), (float("nan"), ValueError)])
def test_bad_concentrations_are_refused(c: float, error: type[Exception]) -> None:
    with pytest.raises(error):
        iaqi("pm2_5", "24h", c)


def test_unknown_row_is_refused() -> None:
    with pytest.raises(KeyError):
        iaqi("pm2_5", "1h", 10)


@pytest.mark.parametrize(
    ("parameter", "value", "lake", "expected"),
    [
        ("dissolved_oxygen", 8.0, False, "I"),
        ("dissolved_oxygen", 7.5, False, "I"),
        ("dissolved_oxygen", 5.5, False, "III"),
        ("dissolved_oxygen", 1.0, False, "worse than V"),
        ("ammonia_nitrogen", 0.5, False, "II"),
        ("ammonia_nitrogen", 2.5, False, "worse than V"),
        ("total_phosphorus", 0.15, False, "III"),
        ("total_phosphorus", 0.15, True, "V"),
        ("ph", 7.4, False, "I"),
        ("ph", 9.5, False, "worse than V"),
    ],
)
def test_gb3838_classes(parameter: str, value: float, lake: bool, expected: str) -> None:
    assert quality.water_class(parameter, value, lake) == expected


def test_gb3838_and_gb3095_limits() -> None:
    assert quality.water_limit("dissolved_oxygen", "III") == (5.0, "below")
    assert quality.water_limit("codmn", "III") == (6.0, "above")
    assert quality.water_limit("ph", "III") is None
    assert quality.air_limit("pm2_5", "24h", 2) == 75
    assert quality.air_limit("so2", "1h", 1) == 150
    assert quality.air_limit("co", "1h", 2) == 10
    assert quality.air_limit("pm2_5", "1h", 2) is None
