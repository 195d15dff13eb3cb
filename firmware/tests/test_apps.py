"""Node apps: median filtering, temperature compensation, calibration, verified relay writes."""

from fakes import Board, Clock
from t import eq, raises

from cenode import apps, filters, wire


def test_filters() -> None:
    eq(filters.median([5, 1, 3]), 3)
    eq(filters.median([4, 1, 3, 2]), 2.5)
    with raises(ValueError):
        filters.median([])
    eq(round(filters.speed_of_sound_m_s(20), 3), 343.42)
    eq(round(filters.echo_to_mm(5831, 20), 1), 1001.2)
    eq(filters.fill_pct(1200, 1200, 200), 0.0)
    eq(filters.fill_pct(700, 1200, 200), 50.0)
    eq(filters.fill_pct(100, 1200, 200), 100.0)
    eq(filters.fill_pct(1500, 1200, 200), 0.0)
    cal = filters.TwoPoint(1500, 7.0, 2030, 4.0)
    eq(round(cal(1500), 3), 7.0)
    eq(round(cal(1765), 3), 5.5)
    with raises(ValueError):
        filters.TwoPoint(1, 2, 1, 3)


def test_bin_fill_uses_the_median_and_the_temperature() -> None:
    # 700 mm at 20 °C is 4076.6 µs; one wild echo (a bag edge) and one timeout do not matter
    board = Board(echoes=[4077, 900, 4075, -2, 4078], adc={"temp": 700})  # TMP36 700 mV = 20 °C
    app = apps.make("bin-fill", board, {"empty_mm": 1200, "full_mm": 200})
    eq(app.sample(), [("fill_pct", 50.0), ("distance_mm", 700), ("temperature_c", 20.0)])
    # the same echo at -10 °C is a shorter distance: sound is slower in the cold
    cold = apps.make("bin-fill", Board(echoes=[4077], adc={"temp": 400}), {"empty_mm": 1200, "full_mm": 200})
    r = dict(cold.sample())
    eq(r["distance_mm"], 663)
    eq(r["temperature_c"], -10.0)


def test_bin_fill_without_echoes_reports_no_level() -> None:
    app = apps.make("bin-fill", Board(echoes=[-2, -2, 4000, -2, -2], adc={"temp": 700}), {})
    eq(app.sample(), [("temperature_c", 20.0)])
    eq(app.errors, 1)
    with raises(ValueError):
        apps.make("bin-fill", Board(), {"empty_mm": 100, "full_mm": 200})
    with raises(ValueError):
        apps.make("toaster", Board(), {})


def test_water_two_point_calibration_and_median() -> None:
    board = Board(adc={"ph": [1765, 1765, 3000, 1765, 1760], "turbidity": 2150, "temp": 650})
    app = apps.make("water", board, {"calibration": {"ph": [[1500, 7.0], [2030, 4.0]], "turbidity": [[2900, 0], [1400, 1000]]}})
    eq(app.sample(), [("ph", 5.5), ("turbidity_ntu", 500.0), ("temperature_c", 15.0)])


def test_gate_relay_commands_are_read_back() -> None:
    clock = Clock()
    board = Board(inputs={"door": True})
    app = apps.GateRelay(board, {}, ticks=clock)
    eq(app.command({"action": "open"}), (wire.DONE, "open"))
    eq(app.sample(), [("door_open", True), ("relay_on", True)])
    eq(app.command({"action": "close"}), (wire.DONE, "close"))
    eq(app.command({"action": "pulse", "ms": 2000}), (wire.DONE, "pulse"))
    clock.advance(1999)
    app.tick()
    eq(board.output("relay"), True)
    clock.advance(1)
    app.tick()
    eq(board.output("relay"), False)
    eq(app.command({"action": "explode"})[0], wire.REFUSED)
    eq(app.command({"action": "pulse", "ms": 10**6})[0], wire.REFUSED)
    board.stuck.add("relay")
    eq(app.command({"action": "open"}), (wire.FAILED, "relay did not switch"))
