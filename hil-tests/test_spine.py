"""The gateway spine end to end: the real gateway process, two simulated Modbus devices and
mosquitto, checked from a real MQTT subscriber standing in for the city brain."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hil import Subscriber, http_json, http_text, start_gateway, start_simulator

from edge.profiles import ProfileLibrary
from protocols import envelope as env
from sim.localsite import Broker, Proc, free_port

POLL_S = 0.5


def site_yaml(water_port: int, air_port: int, mqtt_port: int, http_port: int) -> str:
    return f"""
site: hil-site
gateway: gw-hil
http: {{port: {http_port}}}
shutdown_flush_s: 5
sources:
  - type: modbus
    name: river
    host: 127.0.0.1
    port: {water_port}
    timeout_s: 0.4
    unavailable_after: 2
    reconnect_max_s: 1
    devices: [{{name: river-sonde, profile: water-sonde, poll_interval_s: {POLL_S}}}]
  - type: modbus
    name: air
    host: 127.0.0.1
    port: {air_port}
    timeout_s: 0.4
    unavailable_after: 2
    reconnect_max_s: 1
    devices: [{{name: air-station, profile: air-station, poll_interval_s: {POLL_S}}}]
apps:
  - type: thresholds
    name: limits
    rules:
      - {{device: air-station, point: pm2_5, above: 75, severity: minor, hysteresis: 5, min_duration_s: 1}}
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {mqtt_port}, reconnect_max_s: 1}}
"""


def units_of(profile: str) -> dict[str, str | None]:
    return {p.name: p.unit for p in ProfileLibrary().load(profile).points}


def check_readings_match(
    sub: Subscriber, device: str, profile: str, served: dict[str, list[object]]
) -> int:
    units = units_of(profile)
    checked = 0
    for m in sub.of("telemetry", device):
        assert isinstance(m.envelope, env.TelemetryEnvelope)
        assert m.topic == f"cityedge/v1/hil-site/gw-hil/telemetry/{device}"
        points = {r.point for r in m.envelope.payload.readings}
        assert points == set(units), f"{device} reported {points}"
        for r in m.envelope.payload.readings:
            assert r.unit == units[r.point], r
            assert r.value in served[r.point], f"{device}.{r.point}={r.value!r} was never served"
            checked += 1
    return checked


@dataclass
class Site:
    ports: dict[str, int]
    water: Proc
    gateway: Proc
    sub: Subscriber


def start_site(
    tmp_path: Path,
    broker: Broker,
    procs: list[Proc],
    subscribe: Callable[[int], Subscriber],
    *air_faults: str,
) -> Site:
    """Two simulators (water, air), a subscriber, then the gateway configured for them."""
    p = {k: free_port() for k in ("water", "air", "water_ctl", "air_ctl", "http")}
    water = start_simulator(procs, tmp_path, "water-sonde", p["water"], p["water_ctl"])
    start_simulator(procs, tmp_path, "air-station", p["air"], p["air_ctl"], *air_faults)
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml(p["water"], p["air"], broker.port, p["http"]))
    sub = subscribe(broker.port)
    return Site(p, water, start_gateway(procs, tmp_path, config, p["http"]), sub)


def test_two_devices_outage_and_recovery(
    tmp_path: Path,
    mosquitto: Broker,
    procs: list[Proc],
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    site = start_site(tmp_path, mosquitto, procs, subscriber_factory, "spike:pm2_5=150@3+3")
    p, water, gateway, sub = site.ports, site.water, site.gateway, site.sub

    # Phase 1: both devices report; every value is one the device served, with its unit.
    sub.wait_for(
        lambda: (
            len(sub.of("telemetry", "river-sonde")) >= 8
            and len(sub.of("telemetry", "air-station")) >= 8
        ),
        20,
        "8 polls of each device",
    )
    served_water = http_json(f"http://127.0.0.1:{p['water_ctl']}/served")
    served_air = http_json(f"http://127.0.0.1:{p['air_ctl']}/served")
    assert check_readings_match(sub, "river-sonde", "water-sonde", served_water) >= 8 * 8
    assert check_readings_match(sub, "air-station", "air-station", served_air) >= 8 * 9
    assert not sub.invalid
    sub.wait_for(lambda: len(sub.of("alarm", "air-station")) >= 1, 15, "the PM2.5 spike alarm")
    alarm = sub.of("alarm", "air-station")[0].envelope
    assert (
        isinstance(alarm, env.AlarmEnvelope)
        and alarm.payload.value == 150.0
        and alarm.payload.unit == "µg/m³"
    )

    # Phase 2: the water simulator stops; exactly one "unavailable"; air keeps its cadence.
    water.stop()
    stopped_at = time.monotonic()
    sub.wait_for(
        lambda: len(sub.of("availability", "river-sonde")) >= 1, 10, "river-sonde unavailable"
    )
    time.sleep(4)  # many failed polls later, still one event
    outage = sub.of("availability", "river-sonde")
    assert [m.envelope.payload.state for m in outage] == [env.AvailabilityState.UNAVAILABLE]  # type: ignore[union-attr]
    air_during = [m.at for m in sub.of("telemetry", "air-station", since=stopped_at)]
    span = time.monotonic() - stopped_at
    assert len(air_during) >= int(span / POLL_S) - 2, (len(air_during), span)
    # "on time": no poll of the air station waited behind the dead sonde's timeouts (0.4 s each,
    # every 0.5 s); a coupled design would show gaps of several intervals here
    gaps = [b - a for a, b in itertools.pairwise(air_during)]
    assert max(gaps) < 3 * POLL_S, gaps

    # Phase 3: the simulator comes back on its port; exactly one "recovered".
    start_simulator(
        procs, tmp_path, "water-sonde", p["water"], p["water_ctl"], name="sim-water-again"
    )
    restarted_at = time.monotonic()
    sub.wait_for(
        lambda: len(sub.of("availability", "river-sonde")) >= 2, 15, "river-sonde recovered"
    )
    sub.wait_for(
        lambda: len(sub.of("telemetry", "river-sonde", since=restarted_at)) >= 4,
        10,
        "river readings again",
    )
    states = [m.envelope.payload.state for m in sub.of("availability", "river-sonde")]  # type: ignore[union-attr]
    assert states == [env.AvailabilityState.UNAVAILABLE, env.AvailabilityState.RECOVERED]
    assert not sub.of("availability", "air-station")

    # The local endpoint tells the same story.
    status, body = http_text(f"http://127.0.0.1:{p['http']}/healthz")
    health = json.loads(body)
    assert status == 200 and health["devices"] == {"river-sonde": "up", "air-station": "up"}
    status, metrics = http_text(f"http://127.0.0.1:{p['http']}/metrics")
    assert status == 200
    assert 'cityedge_polls_total{device="air-station",source="air"}' in metrics
    assert 'cityedge_channel_depth{channel="readings"}' in metrics
    assert 'cityedge_published_total{kind="availability",sink="brain"} 2.0' in metrics

    # SIGTERM: a clean stop that flushes what was accepted.
    gateway.popen.send_signal(signal.SIGTERM)
    assert gateway.popen.wait(20) == 0
    log = gateway.log_path.read_text()
    assert "gateway stopped" in log
    assert "not acknowledged" not in log


def test_silent_and_exception_faults_give_one_event_each(
    tmp_path: Path,
    mosquitto: Broker,
    procs: list[Proc],
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    site = start_site(tmp_path, mosquitto, procs, subscriber_factory)
    p, sub = site.ports, site.sub
    ctl = f"http://127.0.0.1:{p['air_ctl']}"
    sub.wait_for(lambda: len(sub.of("telemetry", "air-station")) >= 2, 15, "air readings")

    for mode, expect in (
        ("silent", "no reply from unit 1"),
        ("exception", "exception 4 (server device failure)"),
    ):
        http_json(f"{ctl}/fault", "POST", {"mode": mode, "code": 4})
        sub.wait_for(
            lambda: len(sub.of("availability", "air-station")) % 2 == 1, 10, f"{mode}: unavailable"
        )
        time.sleep(2)
        http_json(f"{ctl}/fault", "POST", {"mode": "normal"})
        sub.wait_for(
            lambda: len(sub.of("availability", "air-station")) % 2 == 0, 10, f"{mode}: recovered"
        )
        last_down = [m for m in sub.of("availability", "air-station")][-2].envelope
        assert isinstance(last_down, env.AvailabilityEnvelope)
        assert expect in last_down.payload.reason
    states = [m.envelope.payload.state.value for m in sub.of("availability", "air-station")]  # type: ignore[union-attr]
    assert states == ["unavailable", "recovered", "unavailable", "recovered"]
    assert not sub.of("availability", "river-sonde")
