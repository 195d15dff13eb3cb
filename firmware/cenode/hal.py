"""The hardware a node app touches, behind one small interface (:class:`Board`).

Built on MicroPython's ``machine`` module: ``Pin``, ``ADC``, ``time_pulse_us``, ``WDT`` and
``reset``. On a board these are the real peripherals; on the unix port a ``machine.py`` earlier
on ``sys.path`` (``firmware/sim/machine.py``) simulates them, so the same code runs in the
hil-tests. Pin numbers come from the node's config (``app.pins``).
"""

from cenode.compat import sleep_ms


class Board:
    def __init__(self, pins: dict, watchdog_ms: int = 0) -> None:
        import machine

        self.machine = machine
        self.pins = pins
        self._adc: dict = {}
        self._out: dict = {}
        self.wdt = machine.WDT(timeout=watchdog_ms) if watchdog_ms else None

    def _pin_out(self, name: str):
        pin = self._out.get(name)
        if pin is None:
            pin = self.machine.Pin(self.pins[name], self.machine.Pin.OUT)
            self._out[name] = pin
        return pin

    def echo_us(self, timeout_us: int = 30000) -> int:
        """One ultrasonic ping (HC-SR04 / JSN-SR04T): 10 µs trigger, echo high time in µs;
        negative on timeout (no echo: nothing in range, or a wet transducer)."""
        trig = self._pin_out("trigger")
        echo = self.machine.Pin(self.pins["echo"], self.machine.Pin.IN)
        trig.value(0)
        trig.value(1)
        sleep_ms(0)
        trig.value(0)
        return self.machine.time_pulse_us(echo, 1, timeout_us)

    def adc_u16(self, name: str) -> int:
        adc = self._adc.get(name)
        if adc is None:
            adc = self.machine.ADC(self.machine.Pin(self.pins[name]))
            self._adc[name] = adc
        return adc.read_u16()

    def adc_mv(self, name: str, vref_mv: int = 3300) -> float:
        return self.adc_u16(name) * vref_mv / 65535

    def read(self, name: str) -> bool:
        return bool(self.machine.Pin(self.pins[name], self.machine.Pin.IN).value())

    def write(self, name: str, on: bool) -> None:
        self._pin_out(name).value(1 if on else 0)

    def output(self, name: str) -> bool:
        return bool(self._pin_out(name).value())

    def feed(self) -> None:
        if self.wdt is not None:
            self.wdt.feed()

    def reset(self) -> None:
        self.machine.reset()
