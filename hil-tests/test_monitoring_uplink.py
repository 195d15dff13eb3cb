"""A monitoring station end to end: the water-sonde simulator (Modbus TCP), the gateway process
with the environment app, the HJ 212 platform simulator process and mosquitto.

The platform receives real-time data (2011) with the appendix B codes and the minute data
(2051) the environment app made; a command from the platform (1062, set the real-time interval)
is answered by the gateway; the city brain receives the same minute as an ``aggregate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil import Subscriber, http_json, start_gateway, start_simulator

from protocols import envelope as env
from sim.localsite import Broker, Proc, cityedge_argv, free_port, start, wait_port


def site_yaml(modbus_port: int, mqtt_port: int, hj_port: int, http_port: int) -> str:
    return f"""
site: hil-env
gateway: gw-env
http: {{port: {http_port}}}
sources:
  - type: modbus
    name: station
    host: 127.0.0.1
    port: {modbus_port}
    timeout_s: 0.5
    devices: [{{name: river-sonde, profile: water-sonde, poll_interval_s: 1}}]
apps:
  - type: environment
    name: limits
    grace_s: 1
    stations: [{{device: river-sonde, medium: water, water_class: III}}]
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {mqtt_port}, reconnect_max_s: 1}}
  - type: hj212
    name: bureau
    host: 127.0.0.1
    port: {hj_port}
    pw: "123456"
    realtime_interval_s: 2
    ack_timeout_s: 2
    reconnect_max_s: 1
    stations: [{{device: river-sonde, mn: RIVER0001, st: 21}}]
"""


def test_station_reports_to_the_bureau_platform_and_the_city_brain(
    tmp_path: Path,
    mosquitto: Broker,
    procs: list[Proc],
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    p = {k: free_port() for k in ("modbus", "modbus_ctl", "hj", "hj_ctl", "http")}
    start_simulator(procs, tmp_path, "water-sonde", p["modbus"], p["modbus_ctl"])
    platform = start(
        "platform",
        cityedge_argv("simulate", "hj212-platform", "--port", str(p["hj"]), "--control-port", str(p["hj_ctl"]),
                      "--pw", "123456", "--mn", "RIVER0001"),
        tmp_path,
    )  # fmt: skip
    procs.append(platform)
    wait_port(p["hj"], proc=platform)
    wait_port(p["hj_ctl"], proc=platform)
    sub = subscriber_factory(mosquitto.port)
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml(p["modbus"], mosquitto.port, p["hj"], p["http"]))
    start_gateway(procs, tmp_path, config, p["http"])
    ctl = f"http://127.0.0.1:{p['hj_ctl']}"

    def messages(cn: int) -> list[dict[str, Any]]:
        return [m for m in http_json(f"{ctl}/state")["messages"] if m["cn"] == cn]

    sub.wait_for(lambda: len(messages(2011)) >= 2, 20, "real-time data at the platform")
    rtd = messages(2011)[-1]
    assert rtd["mn"] == "RIVER0001" and rtd["st"] == 21 and rtd["flag"] == 5
    assert set(rtd["values"]) == {"w01001", "w01009", "w01003", "w01014", "w01010"}
    assert all(v["Flag"] == "N" and float(v["Rtd"]) >= 0 for v in rtd["values"].values())

    # the platform asks for a longer real-time interval; the gateway answers 9011, 9012
    http_json(
        f"{ctl}/command", "POST", {"mn": "RIVER0001", "cn": 1062, "cp": {"RtdInterval": "60"}}
    )
    sub.wait_for(lambda: len(http_json(f"{ctl}/state")["answers"]) >= 2, 10, "answers to 1062")
    answers = [(a["cn"], a["cp"]) for a in http_json(f"{ctl}/state")["answers"]]
    assert answers[:2] == [(9011, {"QnRtn": "1"}), (9012, {"ExeRtn": "1"})]
    count = len(messages(2011))
    time.sleep(5)
    assert len(messages(2011)) <= count + 1  # now at most one per minute

    # the first whole minute reaches both the platform (2051) and the city brain (aggregate)
    sub.wait_for(lambda: len(messages(2051)) >= 1, 90, "minute data at the platform")
    minute = messages(2051)[0]
    assert {"Min", "Avg", "Max", "Flag"} <= set(minute["values"]["w01001"])
    assert minute["data_time"].endswith("00")  # a whole minute, local time
    sub.wait_for(
        lambda: len(sub.of("aggregate", "river-sonde")) >= 1, 10, "the minute at the city brain"
    )
    agg = sub.of("aggregate", "river-sonde")[0].envelope
    assert isinstance(agg, env.AggregateEnvelope) and agg.payload.period == "minute"
    state = http_json(f"{ctl}/state")
    assert state["counts"].get("bad_frames", 0) == 0 and state["counts"].get("refused", 0) == 0
