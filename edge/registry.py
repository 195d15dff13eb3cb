"""The explicit registry of plug-ins: ``type:`` in YAML → config model and implementation.

Nothing is discovered by import side effects. Each entry names its config model (imported here;
pydantic only, so ``check-config`` works without optional packages) and its implementation as
``"module:Class"``, imported only when the gateway builds it. When that import fails for a
missing optional dependency, :func:`load` says which extra to install.

To add a plug-in: write ``edge/<role>s/<name>_config.py`` and ``edge/<role>s/<name>.py`` and add
one :class:`PluginInfo` line below.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field

from edge.apps.bin_fill_config import BinFillConfig
from edge.apps.environment_config import EnvironmentConfig
from edge.apps.face_access_config import FaceAccessConfig
from edge.apps.hygiene_config import HygieneConfig
from edge.apps.thresholds_config import ThresholdsConfig
from edge.apps.traffic_signal_config import TrafficSignalConfig
from edge.config.base import PluginConfig
from edge.errors import MissingExtraError
from edge.sinks.hj212_config import Hj212SinkConfig
from edge.sinks.mqtt_config import MqttSinkConfig
from edge.sources.coap_config import CoapSourceConfig
from edge.sources.modbus_config import ModbusSourceConfig
from edge.sources.mqtt_config import MqttSourceConfig
from edge.vision.camera_config import CameraSourceConfig

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
        "edge.sources.modbus:ModbusSource",
        "modbus",
        "Modbus TCP or RTU devices on one bus, polled on an interval",
    ),
    PluginInfo(
        "source",
        "coap",
        CoapSourceConfig,
        "edge.sources.coap:CoapSource",
        "coap",
        "CoAP sensors by GET polling or Observe (SenML JSON/CBOR, JSON, text)",
    ),
    PluginInfo(
        "source",
        "camera",
        CameraSourceConfig,
        "edge.vision.camera:CameraSource",
        "vision",
        "Camera frames (file, RTSP, USB) via OpenCV, motion-gated",
    ),
    PluginInfo(
        "app",
        "face_access",
        FaceAccessConfig,
        "edge.apps.face_access:FaceAccessApp",
        "vision",
        "Face recognition at a gate: open the relay, report access events",
    ),
    PluginInfo(
        "source",
        "mqtt",
        MqttSourceConfig,
        "edge.sources.mqtt:MqttSource",
        None,
        "MicroPython sensor nodes reporting to the site's local MQTT broker",
    ),
    PluginInfo(
        "app",
        "bin_fill",
        BinFillConfig,
        "edge.apps.bin_fill:BinFillApp",
        "vision",
        "Bin fill level from cameras and level sensors: collection events, overflow alarm",
    ),
    PluginInfo(
        "app",
        "hygiene",
        HygieneConfig,
        "edge.apps.hygiene:HygieneApp",
        "vision",
        "Mask and hair-cover compliance in clean zones, with blurred evidence crops",
    ),
    PluginInfo(
        "app",
        "thresholds",
        ThresholdsConfig,
        "edge.apps.thresholds:ThresholdsApp",
        None,
        "Alarms on limits with hysteresis and minimum duration",
    ),
    PluginInfo(
        "app",
        "environment",
        EnvironmentConfig,
        "edge.apps.environment:EnvironmentApp",
        None,
        "Water/air stations: minute/hour/day aggregates, GB 3838/GB 3095 alarms, HJ 633 AQI",
    ),
    PluginInfo(
        "app",
        "traffic_signal",
        TrafficSignalConfig,
        "edge.apps.traffic_signal:TrafficSignalApp",
        None,
        "Adaptive, safe-by-construction control of a signalised junction",
    ),
    PluginInfo(
        "sink",
        "mqtt",
        MqttSinkConfig,
        "edge.sinks.mqtt:MqttSink",
        None,
        "Publish envelopes to an MQTT broker at QoS 1",
    ),
    PluginInfo(
        "sink",
        "hj212",
        Hj212SinkConfig,
        "edge.sinks.hj212:Hj212Sink",
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


def load(info: PluginInfo) -> Callable[..., Any]:
    """The implementation class; :class:`MissingExtraError` names the extra when one is missing."""
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
    factory: Callable[..., Any] = getattr(module, attr)
    return factory
