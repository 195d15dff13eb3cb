"""The node apps: what each kind of node measures and which commands it takes.

Each app has ``sample() -> [(point, value), ...]`` (empty when nothing could be measured),
``tick()`` for timed work, and ``command(body: dict) -> (result, message)`` for commands that
already passed signature, expiry, replay and addressing checks in :mod:`cenode.node`.
"""

from cenode import filters
from cenode.wire import DONE, FAILED, REFUSED


def tmp36_c(mv: float) -> float:
    """TMP36: 500 mV at 0 °C, 10 mV per °C."""
    return (mv - 500) / 10


class BinFill:
    """Ultrasonic distance -> fill level: median of ``pings`` echoes (one reflection off a bag
    edge or a missed echo must not move the level), speed of sound from the temperature."""

    kind = "bin-fill"

    def __init__(self, board, params: dict) -> None:
        self.board = board
        self.empty_mm = float(params.get("empty_mm", 1200))
        self.full_mm = float(params.get("full_mm", 150))
        self.pings = int(params.get("pings", 5))
        self.errors = 0
        if self.empty_mm <= self.full_mm:
            raise ValueError("app.empty_mm must be larger than app.full_mm")

    def sample(self) -> list:
        temperature = tmp36_c(self.board.adc_mv("temp"))
        echoes = []
        for _ in range(self.pings):
            e = self.board.echo_us()
            if e > 0:
                echoes.append(e)
        if len(echoes) * 2 <= self.pings:  # most pings failed: no trustworthy level
            self.errors += 1
            return [("temperature_c", round(temperature, 1))]
        mm = filters.echo_to_mm(filters.median(echoes), temperature)
        return [
            ("fill_pct", round(filters.fill_pct(mm, self.empty_mm, self.full_mm), 1)),
            ("distance_mm", int(mm + 0.5)),
            ("temperature_c", round(temperature, 1)),
        ]

    def tick(self) -> None:
        pass

    def command(self, body: dict) -> tuple:
        return REFUSED, "a bin-fill node takes no commands"


class Water:
    """pH and turbidity probes on two ADC channels, each with a two-point calibration in mV
    (``calibration.ph: [[mv_at_7, 7.0], [mv_at_4, 4.0]]``), median of ``samples`` reads."""

    kind = "water"

    def __init__(self, board, params: dict) -> None:
        self.board = board
        cal = params.get("calibration", {})
        ph = cal.get("ph", [[1500, 7.0], [2030, 4.0]])
        tu = cal.get("turbidity", [[2900, 0.0], [1400, 1000.0]])
        self.ph = filters.TwoPoint(ph[0][0], ph[0][1], ph[1][0], ph[1][1])
        self.turbidity = filters.TwoPoint(tu[0][0], tu[0][1], tu[1][0], tu[1][1])
        self.samples = int(params.get("samples", 5))

    def _mv(self, name: str) -> float:
        return filters.median([self.board.adc_mv(name) for _ in range(self.samples)])

    def sample(self) -> list:
        ph = self.ph(self._mv("ph"))
        ntu = self.turbidity(self._mv("turbidity"))
        return [
            ("ph", round(min(14.0, max(0.0, ph)), 2)),
            ("turbidity_ntu", round(max(0.0, ntu), 1)),
            ("temperature_c", round(tmp36_c(self._mv("temp")), 1)),
        ]

    def tick(self) -> None:
        pass

    def command(self, body: dict) -> tuple:
        return REFUSED, "a water node takes no commands"


class GateRelay:
    """A relay that opens a gate and a door contact that says whether it is open. Commands:
    ``{"action": "open" | "close" | "pulse", "ms": 2000}``; the relay is read back after every
    write and a relay that did not follow is reported as failed."""

    kind = "gate-relay"

    def __init__(self, board, params: dict, ticks=None) -> None:
        from cenode.compat import ticks_ms

        self.board = board
        self.ticks = ticks or ticks_ms
        self.max_pulse_ms = int(params.get("max_pulse_ms", 10000))
        self.release_at: int | None = None

    def sample(self) -> list:
        return [("door_open", self.board.read("door")), ("relay_on", self.board.output("relay"))]

    def tick(self) -> None:
        from cenode.compat import ticks_diff

        if self.release_at is not None and ticks_diff(self.ticks(), self.release_at) >= 0:
            self.release_at = None
            self.board.write("relay", False)

    def command(self, body: dict) -> tuple:
        from cenode.compat import ticks_add

        action = body.get("action")
        if action not in ("open", "close", "pulse"):
            return REFUSED, "action must be open, close or pulse"
        on = action != "close"
        if action == "pulse":
            ms = body.get("ms", 2000)
            if not isinstance(ms, int) or not 0 < ms <= self.max_pulse_ms:
                return REFUSED, "pulse ms must be 1-" + str(self.max_pulse_ms)
            self.release_at = ticks_add(self.ticks(), ms)
        else:
            self.release_at = None
        self.board.write("relay", on)
        if self.board.output("relay") != on:
            return FAILED, "relay did not switch"
        return DONE, action


APPS = {"bin-fill": BinFill, "water": Water, "gate-relay": GateRelay}


def make(kind: str, board, params: dict):
    cls = APPS.get(kind)
    if cls is None:
        raise ValueError("unknown node kind " + kind + "; one of " + ", ".join(APPS))
    return cls(board, params)
