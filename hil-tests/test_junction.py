"""Traffic signals end to end: the real gateway process drives a SUMO junction through the
simulated cabinet over Modbus TCP, as it would a roadside cabinet, and reports to a real
MQTT subscriber standing in for the city brain.

A shortened morning peak at 5x real time (one simulated second per 0.2 s) in which
- the main southbound detector sticks "occupied" at 80 s and is repaired at 120 s, and
- the cabinet stops answering Modbus from 200 s to 210 s.
The run must end with no safety breach recorded by SUMO (collisions, emergency stops) nor
by the independent monitor watching SUMO's heads, and both faults must reach the city brain
as ``signal_fallback`` events — with the stuck detector named — and control must come back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hil import Subscriber, start_gateway

from protocols import envelope as env
from sim.localsite import Broker, Proc, cityedge_argv, free_port, start, wait_port

SPEED = 5.0
DEMAND_S = 260
DRAIN_S = 40


def site_yaml(modbus_port: int, mqtt_port: int, http_port: int) -> str:
    # times in the app are on the cabinet's clock (simulated seconds), except the link
    # timeout, which is the gateway's (wall) clock
    return f"""
site: hil-junction
gateway: gw-junction
http: {{port: {http_port}}}
shutdown_flush_s: 5
sources:
  - type: modbus
    name: cabinet-link
    host: 127.0.0.1
    port: {modbus_port}
    timeout_s: 0.5
    unavailable_after: 2
    reconnect_max_s: 0.5
    devices:
      - {{name: junction-1, profile: signal-controller, poll_interval_s: {1 / SPEED}}}
apps:
  - type: traffic_signal
    name: junction-1-control
    device: junction-1
    junction: four-arm
    ped_margin_s: 10
    recover_s: 20
    link_timeout_s: 1.5
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {mqtt_port}, reconnect_max_s: 1}}
"""


def start_junction(procs: list[Proc], workdir: Path, port: int, report: Path) -> Proc:
    argv = cityedge_argv(
        "simulate",
        "junction",
        "--scenario",
        "morning-peak",
        "--port",
        str(port),
        "--seed",
        "4",
        "--speed",
        str(SPEED),
        "--duration-s",
        str(DEMAND_S),
        "--drain-s",
        str(DRAIN_S),
        "--watchdog-s",
        "10",
        "--detector-fault",
        "d_N_T@80+40",
        "--fault",
        "silent@200+10",
        "--report",
        str(report),
    )
    proc = start("junction", argv, workdir)
    procs.append(proc)
    wait_port(port, proc=proc, timeout_s=30)
    return proc


def test_the_gateway_drives_the_junction_safely_through_faults(
    mosquitto: Broker,
    procs: list[Proc],
    subscriber_factory: Callable[[int], Subscriber],
    tmp_path: Path,
) -> None:
    modbus_port, http_port = free_port(), free_port()
    report_file = tmp_path / "report.json"
    sub = subscriber_factory(mosquitto.port)
    sim = start_junction(procs, tmp_path, modbus_port, report_file)
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml(modbus_port, mosquitto.port, http_port), encoding="utf-8")
    gateway = start_gateway(procs, tmp_path, config, http_port)

    wall_s = (DEMAND_S + DRAIN_S) / SPEED
    assert sim.popen.wait(timeout=wall_s + 60) == 0, sim.tail()
    assert gateway.alive(), gateway.tail()
    gateway.stop()
    report = json.loads(report_file.read_text(encoding="utf-8"))

    # safety, as SUMO saw it and as our monitor saw SUMO's heads
    result = report["result"]
    assert report["violations"] == [], report["violations"][:5]
    assert result["collisions"] == 0 and result["emergency_stops"] == 0
    assert report["commands"]["conflict_trips"] == 0 and report["commands"]["refused"] == 0
    assert result["vehicles"] > 100

    # the gateway had the junction, handed it to the fixed plan twice, and took it back
    modes = [m for _, m in report["modes"]]
    assert "remote" in modes and modes[-1] == "remote", report["modes"]
    assert report["detector_faults_seen"] == ["d_N_T"]

    plans = [m.envelope for m in sub.of("signal_plan", "junction-1")]
    assert len(plans) >= 10
    for e in plans:
        assert isinstance(e, env.SignalPlanEnvelope) and e.payload.junction == "four-arm"
    fallbacks = [
        m.envelope.payload
        for m in sub.of("signal_fallback", "junction-1")
        if isinstance(m.envelope, env.SignalFallbackEnvelope)
    ]
    stuck = [f for f in fallbacks if f.detectors == ["d_N_T"]]
    assert stuck and stuck[0].state is env.SignalFallbackState.ENTERED
    assert "detector failed" in stuck[0].reason
    lost = [f for f in fallbacks if "link lost" in f.reason]
    assert lost and lost[0].state is env.SignalFallbackState.ENTERED
    assert fallbacks[-1].state is env.SignalFallbackState.LEFT
