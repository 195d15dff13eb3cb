"""The explicit registry of plug-ins: ``type:`` in YAML → config model and implementation.

Nothing is discovered by import side effects. Each entry names its config model (imported here;
pydantic only, so ``check-config`` works without optional packages) and its implementation as
``"module:Class"``, imported only when the gateway builds it. When that import fails for a
missing optional dependency, :func:`load` says which extra to install; what it returns is
checked to be a :class:`~edge.plugin.Plugin` class (a :class:`~edge.plugin.PluginFactory`).

To add a plug-in: write a package ``edge/<name>/`` with ``config.py`` (the pydantic model, no
optional imports) and its implementation (``source.py``, ``app.py`` or ``sink.py``), add one
:class:`PluginInfo` line below, and its class to its role's table in
``tests/edge/test_contract.py`` (where mypy checks it is built as ``(config, ctx)``).
"""

from __future__ import annotations

import builtins
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field

from edge.bin_fill.config import BinFillConfig
from edge.camera.config import CameraSourceConfig
from edge.coap.config import CoapSourceConfig
from edge.config.base import PluginConfig
from edge.environment.config import EnvironmentConfig
from edge.errors import MissingExtraError
from edge.face_access.config import FaceAccessConfig
from edge.hj212_sink.config import Hj212SinkConfig
from edge.hygiene.config import HygieneConfig
from edge.modbus.config import ModbusSourceConfig
from edge.mqtt_sink.config import MqttSinkConfig
from edge.node_mqtt.config import MqttSourceConfig
from edge.plugin import Plugin, PluginFactory
from edge.thresholds.config import ThresholdsConfig
from edge.traffic_signal.config import TrafficSignalConfig

Role = Literal["source", "app", "sink"]


@dataclass(frozen=True)
class PluginInfo:
    role: Role
    type: str
    config: builtins.type[PluginConfig]
    implementation: str  # "module:Class"
    extra: str | None  # optional-dependency extra that provides the imports, if any
    summary: str


PLUGINS: tuple[PluginInfo, ...] = (
    PluginInfo(
        "source",
        "modbus",
        ModbusSourceConfig,
        "edge.modbus.source:ModbusSource",
        "modbus",
        "Modbus TCP or RTU devices on one bus, polled on an interval",
    ),
    PluginInfo(
        "source",
        "coap",
        CoapSourceConfig,
        "edge.coap.source:CoapSource",
        "coap",
        "CoAP sensors by GET polling or Observe (SenML JSON/CBOR, JSON, text)",
    ),
    PluginInfo(
        "source",
        "camera",
        CameraSourceConfig,
        "edge.camera.source:CameraSource",
        "vision",
        "Camera frames (file, RTSP, USB) via OpenCV, motion-gated",
    ),
    PluginInfo(
        "app",
        "face_access",
        FaceAccessConfig,
        "edge.face_access.app:FaceAccessApp",
        "vision",
        "Face recognition at a gate: open the relay, report access events",
    ),
    PluginInfo(
        "source",
        "mqtt",
        MqttSourceConfig,
        "edge.node_mqtt.source:MqttSource",
        None,
        "MicroPython sensor nodes reporting to the site's local MQTT broker",
    ),
    PluginInfo(
        "app",
        "bin_fill",
        BinFillConfig,
        "edge.bin_fill.app:BinFillApp",
        "vision",
        "Bin fill level from cameras and level sensors: collection events, overflow alarm",
    ),
    PluginInfo(
        "app",
        "hygiene",
        HygieneConfig,
        "edge.hygiene.app:HygieneApp",
        "vision",
        "Mask and hair-cover compliance in clean zones, with blurred evidence crops",
    ),
    PluginInfo(
        "app",
        "thresholds",
        ThresholdsConfig,
        "edge.thresholds.app:ThresholdsApp",
        None,
        "Alarms on limits with hysteresis and minimum duration",
    ),
    PluginInfo(
        "app",
        "environment",
        EnvironmentConfig,
        "edge.environment.app:EnvironmentApp",
        None,
        "Water/air stations: minute/hour/day aggregates, GB 3838/GB 3095 alarms, HJ 633 AQI",
    ),
    PluginInfo(
        "app",
        "traffic_signal",
        TrafficSignalConfig,
        "edge.traffic_signal.app:TrafficSignalApp",
        None,
        "Adaptive, safe-by-construction control of a signalised junction",
    ),
    PluginInfo(
        "sink",
        "mqtt",
        MqttSinkConfig,
        "edge.mqtt_sink.sink:MqttSink",
        None,
        "Publish envelopes to an MQTT broker at QoS 1",
    ),
    PluginInfo(
        "sink",
        "hj212",
        Hj212SinkConfig,
        "edge.hj212_sink.sink:Hj212Sink",
        None,
        "Monitoring data to an environment bureau's platform over HJ 212-2017",
    ),
)


def of_role(role: Role) -> tuple[PluginInfo, ...]:
    return tuple(p for p in PLUGINS if p.role == role)


def _union(role: Role) -> Any:
    models = [p.config for p in of_role(role)]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    SourceConfig = PluginConfig
    AppConfig = PluginConfig
    SinkConfig = PluginConfig
else:
    SourceConfig = _union("source")
    AppConfig = _union("app")
    SinkConfig = _union("sink")


def info_for(config: PluginConfig) -> PluginInfo:
    for p in PLUGINS:
        if isinstance(config, p.config):
            return p
    raise KeyError(type(config).__name__)


def load(info: PluginInfo) -> PluginFactory:
    """The implementation class; :class:`MissingExtraError` names the extra when one is missing.
    Raises :class:`TypeError` when the entry does not name a :class:`~edge.plugin.Plugin` class
    (a mistake in this file, caught by the tests)."""
    module_name, _, attr = info.implementation.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        extra = info.extra or "all"
        raise MissingExtraError(
            f"{info.role} type {info.type!r} needs the Python package {err.name!r}, "
            "which is not installed",
            hint=f"pip install 'cityedge[{extra}]'",
        ) from err
    factory: PluginFactory = getattr(module, attr)
    if not _is_plugin_class(factory):
        raise TypeError(f"{info.implementation} ({info.role} {info.type!r}) is not a Plugin class")
    return factory


def _is_plugin_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Plugin)
