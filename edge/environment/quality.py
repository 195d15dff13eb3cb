"""National water and air quality rules as pure functions: the air quality index of HJ 633-2012,
the concentration limits of GB 3095-2012 and the surface-water classes of GB 3838-2002 (the
limits themselves are data: ``edge/environment/limits/*.yaml``).

AQI (HJ 633-2012):

- the individual index of a pollutant (section 4, formula 1) interpolates linearly between the
  two table 1 breakpoints around its concentration and is rounded *up* to an integer ("进位取
  整数"); the AQI is the largest individual index;
- the primary pollutant(s) ("首要污染物") are those whose index equals the AQI, named only when
  the AQI is above 50; pollutants with an index above 100 are "over the limit" ("超标污染物");
- table 1 note 2: a 1-hour SO2 above 800 µg/m³ is not indexed by the 1-hour rows; its index
  comes from the 24-hour rows. Note 3: an 8-hour O3 above 800 µg/m³ is not indexed by the
  8-hour rows; the 1-hour index is used;
- table 1 has PM10 and PM2.5 rows for 24-hour means only; an hourly AQI at the edge applies them
  to hourly means, as hourly ("real-time") reports do; beyond the table's top the index is 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import yaml

LIMITS_DIR: Final = Path(__file__).parent / "limits"

IAQI_STEPS: Final = (0, 50, 100, 150, 200, 300, 400, 500)

#: HJ 633-2012 table 1: concentration breakpoints per pollutant and averaging time.
BREAKPOINTS: Final[dict[tuple[str, str], tuple[float, ...]]] = {
    ("so2", "24h"): (0, 50, 150, 475, 800, 1600, 2100, 2620),
    ("so2", "1h"): (0, 150, 500, 650, 800),
    ("no2", "24h"): (0, 40, 80, 180, 280, 565, 750, 940),
    ("no2", "1h"): (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    ("pm10", "24h"): (0, 50, 150, 250, 350, 420, 500, 600),
    ("co", "24h"): (0, 2, 4, 14, 24, 36, 48, 60),
    ("co", "1h"): (0, 5, 10, 35, 60, 90, 120, 150),
    ("o3", "1h"): (0, 160, 200, 300, 400, 800, 1000, 1200),
    ("o3", "8h"): (0, 100, 160, 215, 265, 800),
    ("pm2_5", "24h"): (0, 35, 75, 115, 150, 250, 350, 500),
}

#: AQI categories (table 2): upper bound, level, category, colour (appendix A)
CATEGORIES: Final = (
    (50, 1, "excellent", "green"),
    (100, 2, "good", "yellow"),
    (150, 3, "lightly polluted", "orange"),
    (200, 4, "moderately polluted", "red"),
    (300, 5, "heavily polluted", "purple"),
    (math.inf, 6, "severely polluted", "maroon"),
)


def iaqi(pollutant: str, averaging: str, concentration: float) -> int | None:
    """Individual AQI of one concentration (µg/m³; CO mg/m³). None where table 1 says the row
    does not index it (1-hour SO2 above 800, 8-hour O3 above 800). Raises :class:`KeyError` for
    a pollutant/averaging table 1 does not have and :class:`ValueError` for a negative or
    non-finite concentration."""
    bps = BREAKPOINTS[(pollutant, averaging)]
    if not math.isfinite(concentration) or concentration < 0:
        raise ValueError(f"{pollutant} concentration {concentration} must be finite and >= 0")
    if concentration > bps[-1]:
        if (pollutant, averaging) in (("so2", "1h"), ("o3", "8h")):
            return None
        return IAQI_STEPS[len(bps) - 1]
    for i in range(1, len(bps)):
        if concentration <= bps[i]:
            lo, hi = bps[i - 1], bps[i]
            i_lo, i_hi = IAQI_STEPS[i - 1], IAQI_STEPS[i]
            value = (i_hi - i_lo) / (hi - lo) * (concentration - lo) + i_lo
            return math.ceil(round(value, 9))  # 4.3: round up; round() drops float noise
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Aqi:
    aqi: int
    level: int
    category: str
    colour: str
    primary: tuple[str, ...]
    over_limit: tuple[str, ...]
    iaqi: dict[str, int] = field(default_factory=dict)


def combine(indexes: dict[str, int]) -> Aqi:
    """The AQI, category and primary pollutant(s) of individual indexes (keys name the
    pollutant, e.g. ``pm2_5``, ``o3_8h``)."""
    if not indexes:
        raise ValueError("no pollutant to index")
    top = max(indexes.values())
    primary = tuple(sorted(p for p, v in indexes.items() if v == top)) if top > 50 else ()
    over = tuple(sorted(p for p, v in indexes.items() if v > 100))
    _, level, category, colour = next(c for c in CATEGORIES if top <= c[0])
    return Aqi(top, level, category, colour, primary, over, dict(indexes))


def hourly_aqi(hour: dict[str, float], day: dict[str, float] | None = None) -> Aqi | None:
    """AQI of one hour from hourly means (``so2, no2, co, o3, pm10, pm2_5``; any subset),
    ``o3_8h`` when known, and 24-hour means in ``day`` for the SO2 fallback of note 2."""
    out: dict[str, int] = {}
    for p, c in hour.items():
        if p in ("so2", "no2", "co", "o3"):
            idx = iaqi(p, "1h", c)
            if idx is None and p == "so2":  # note 2: index SO2 by its 24-hour mean
                idx = iaqi("so2", "24h", (day or {}).get("so2", c))
            if idx is not None:
                out[p] = idx
        elif p in ("pm10", "pm2_5"):
            out[p] = iaqi(p, "24h", c) or 0
        elif p == "o3_8h":
            idx = iaqi("o3", "8h", c)
            if idx is not None:
                out["o3_8h"] = idx
    return combine(out) if out else None


def daily_aqi(day: dict[str, float]) -> Aqi | None:
    """Daily AQI from 24-hour means (``so2, no2, co, pm10, pm2_5``), the day's maximum 1-hour
    ``o3`` and maximum 8-hour ``o3_8h`` (note 3: above 800 the 1-hour index stands in)."""
    out: dict[str, int] = {}
    for p in ("so2", "no2", "co", "pm10", "pm2_5"):
        if p in day:
            out[p] = iaqi(p, "24h", day[p]) or 0
    if "o3_8h" in day:
        idx = iaqi("o3", "8h", day["o3_8h"])
        if idx is None and "o3" in day:
            idx = iaqi("o3", "1h", day["o3"])
        if idx is not None:
            out["o3_8h"] = idx
    elif "o3" in day:
        idx = iaqi("o3", "1h", day["o3"])
        if idx is not None:
            out["o3"] = idx
    return combine(out) if out else None


# -- limits as data ----------------------------------------------------------------------------


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((LIMITS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


WATER_CLASSES: Final = ("I", "II", "III", "IV", "V")
WORSE_THAN_V: Final = "worse than V"


def water_parameters() -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = _load("gb3838-2002")["parameters"]
    return params


def air_parameters() -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = _load("gb3095-2012")["parameters"]
    return params


def water_class(parameter: str, value: float, lake: bool = False) -> str:
    """The best GB 3838-2002 class (I..V) whose limit ``value`` meets, else "worse than V"."""
    p = water_parameters()[parameter]
    if p["kind"] == "range":
        return WATER_CLASSES[0] if p["low"] <= value <= p["high"] else WORSE_THAN_V
    limits = p.get("lake", p["limits"]) if lake else p["limits"]
    for cls, limit in zip(WATER_CLASSES, limits, strict=True):
        if (value >= limit) if p["kind"] == "min" else (value <= limit):
            return cls
    return WORSE_THAN_V


def water_limit(
    parameter: str, target: str, lake: bool = False
) -> tuple[float, Literal["above", "below"]] | None:
    """The limit of class ``target`` and which side of it is bad (pH: None, see water_class)."""
    p = water_parameters()[parameter]
    if p["kind"] == "range":
        return None
    limits = p.get("lake", p["limits"]) if lake else p["limits"]
    return float(limits[WATER_CLASSES.index(target)]), ("below" if p["kind"] == "min" else "above")


def class_rank(cls: str) -> int:
    return WATER_CLASSES.index(cls) if cls in WATER_CLASSES else len(WATER_CLASSES)


def air_limit(parameter: str, averaging: str, grade: int) -> float | None:
    """GB 3095-2012 limit of ``parameter`` for ``averaging`` (1h, 8h, 24h, annual) in areas of
    class ``grade`` (1 or 2); None when the standard sets none."""
    limits = air_parameters()[parameter]["limits"].get(averaging)
    return None if limits is None else float(limits[grade - 1])
