"""The plug-in contract: the registry names a :class:`Plugin` class of its role for every type
(checked by mypy through the tables below, and at run time by :func:`load`); optional abilities
are Protocols a plug-in names among its bases, and the gateway finds them with ``isinstance``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.actuators import MultiWriter, Writer
from edge.bin_fill.app import BinFillApp
from edge.camera.source import CameraSource
from edge.card_reader.source import CardReaderSource
from edge.coap.source import CoapSource
from edge.config.site import load_site
from edge.environment.app import EnvironmentApp
from edge.face_access.app import FaceAccessApp
from edge.gateway import Gateway
from edge.hj212_sink.sink import Hj212Sink
from edge.hygiene.app import HygieneApp
from edge.modbus.source import ModbusSource
from edge.mqtt_sink.sink import MqttSink
from edge.node_mqtt.source import MqttSource
from edge.plugin import (
    AppContext,
    Plugin,
    ReportsHealth,
    ServesRoutes,
    SinkContext,
    SourceContext,
    TracksDevices,
)
from edge.registry import PLUGINS, load
from edge.thresholds.app import ThresholdsApp
from edge.traffic_signal.app import TrafficSignalApp

# mypy checks that each class is built as (config, the context of its role) and is a Plugin
SOURCES: dict[str, Callable[[Any, SourceContext], Plugin]] = {
    "modbus": ModbusSource,
    "coap": CoapSource,
    "camera": CameraSource,
    "mqtt": MqttSource,
    "card_reader": CardReaderSource,
}
APPS: dict[str, Callable[[Any, AppContext], Plugin]] = {
    "face_access": FaceAccessApp,
    "bin_fill": BinFillApp,
    "hygiene": HygieneApp,
    "thresholds": ThresholdsApp,
    "environment": EnvironmentApp,
    "traffic_signal": TrafficSignalApp,
}
SINKS: dict[str, Callable[[Any, SinkContext], Plugin]] = {"mqtt": MqttSink, "hj212": Hj212Sink}
ROLES: dict[str, dict[str, Any]] = {"source": SOURCES, "app": APPS, "sink": SINKS}

ABILITIES = (Writer, MultiWriter, TracksDevices, ServesRoutes, ReportsHealth)
HAS = {
    ModbusSource: {Writer, MultiWriter, TracksDevices},
    CoapSource: {TracksDevices},
    MqttSource: {Writer, TracksDevices},  # relay_on of gate-relay nodes
    FaceAccessApp: {ServesRoutes},
    BinFillApp: {ServesRoutes},
    MqttSink: {ReportsHealth},
    CardReaderSource: {ReportsHealth},
}


def test_the_registry_names_a_plugin_class_of_its_role_for_every_type() -> None:
    assert {(p.role, p.type) for p in PLUGINS} == {
        (role, t) for role, table in ROLES.items() for t in table
    }
    for info in PLUGINS:
        assert load(info) is ROLES[info.role][info.type], info.type


def test_an_entry_that_names_no_plugin_class_is_refused() -> None:
    wrong = dataclasses.replace(PLUGINS[0], implementation="edge.readings:ReadingBatch")
    with pytest.raises(TypeError, match=r"edge.readings:ReadingBatch \(source 'modbus'\) is not"):
        load(wrong)


def test_each_plugin_names_the_abilities_it_has() -> None:
    for table in ROLES.values():
        for cls in table.values():
            assert Plugin in cls.__mro__
            assert {a for a in ABILITIES if a in cls.__mro__} == HAS.get(cls, set()), cls


SITE = """\
site: s
gateway: g
http: {port: 0}
sources:
  - {type: camera, name: cam, camera: cam-1, url: "rtsp://127.0.0.1:1/none"}
  - type: modbus
    name: bus
    host: 127.0.0.1
    port: 1
    devices:
      - {name: gate-1, points: [{name: relay, address: 0, table: coil, dtype: bool}]}
  - {type: mqtt, name: nodes, host: 127.0.0.1, port: 1, nodes: [{name: bin-17, kind: bin-fill}]}
apps:
  - {type: bin_fill, name: bins, bins: [{id: bin-21, camera: cam-1, roi: [0, 0, 100, 100]}]}
sinks:
  - {type: mqtt, name: brain, host: 127.0.0.1, port: 1, outbox: {path: outbox.db}}
"""


def test_the_gateway_finds_the_abilities_of_the_plugins_it_builds(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(SITE)
    gw = Gateway(load_site(tmp_path / "site.yaml"))
    assert [(b.info.role, b.name) for b in (*gw.sources, *gw.apps, *gw.sinks)] == [
        ("source", "cam"),
        ("source", "bus"),
        ("source", "nodes"),
        ("app", "bins"),
        ("sink", "brain"),
    ]
    # the sources that write own their devices' writes (a bin-fill node refuses them, named)
    assert gw.actuators.devices == {"gate-1", "bin-17"}
    assert gw.device_health() == {"gate-1": "unknown", "bin-17": "unknown"}
    assert [r.path for r in gw.routes] == ["/bins/bins/collection"]
    assert gw.health() == ([], [])  # the mqtt sink reports health; its bridge is not open yet
