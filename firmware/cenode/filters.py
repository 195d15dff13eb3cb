"""Signal conditioning shared by the node apps (pure arithmetic, no hardware)."""


def median(values: list) -> float:
    """Median of a non-empty list (mean of the middle two for an even count)."""
    s = sorted(values)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def speed_of_sound_m_s(temperature_c: float) -> float:
    """In dry air; 331.3 m/s at 0 °C, +0.606 m/s per °C (linearised, good for -20..50 °C)."""
    return 331.3 + 0.606 * temperature_c


def echo_to_mm(echo_us: float, temperature_c: float) -> float:
    """Distance to the target from an ultrasonic round-trip time: half the path."""
    return echo_us * speed_of_sound_m_s(temperature_c) / 2000


def fill_pct(distance_mm: float, empty_mm: float, full_mm: float) -> float:
    """0 % at ``empty_mm`` (sensor to the floor of the empty bin), 100 % at ``full_mm``;
    clamped, since waste piled above the rim or a reflection below the floor happens."""
    if empty_mm <= full_mm:
        raise ValueError("empty_mm must be larger than full_mm")
    pct = (empty_mm - distance_mm) * 100 / (empty_mm - full_mm)
    return 0.0 if pct < 0 else 100.0 if pct > 100 else pct


class TwoPoint:
    """Linear calibration through two reference points (raw1 -> value1, raw2 -> value2)."""

    def __init__(self, raw1: float, value1: float, raw2: float, value2: float) -> None:
        if raw1 == raw2:
            raise ValueError("the two calibration points need different raw readings")
        self.slope = (value2 - value1) / (raw2 - raw1)
        self.offset = value1 - self.slope * raw1

    def __call__(self, raw: float) -> float:
        return self.slope * raw + self.offset
