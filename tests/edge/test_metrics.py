"""Metric names, types, labels and help are what dashboards use: the core declares the ones a
role shares, each part declares its own (:meth:`GatewayMetrics.own`), and together they are the
same families as ever."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from edge.actuators import ActuatorMetrics
from edge.camera.source import CameraMetrics
from edge.face_access.app import FaceAccessMetrics
from edge.hj212_sink.sink import Hj212SinkMetrics
from edge.metrics import GatewayMetrics
from edge.mqtt_sink.sink import MqttSinkMetrics

FAMILIES = {
    # name, type, labels, help
    ("cityedge_polls", "counter", ("source", "device"), "Device polls"),
    ("cityedge_poll_errors", "counter", ("source", "device", "reason"), "Failed polls or points"),
    ("cityedge_poll_latency_seconds", "histogram", ("source", "device"), "Time to poll a device"),
    (
        "cityedge_poll_slots_missed",
        "counter",
        ("source", "device"),
        "Poll slots that passed while a poll or its delivery was under way (a slow "
        "device, or the sources waiting for the uplink)",
    ),
    ("cityedge_readings", "counter", ("source", "device"), "Point values read"),
    ("cityedge_device_up", "gauge", ("source", "device"), "Device answering"),
    ("cityedge_events", "counter", ("kind",), "Envelopes made"),
    ("cityedge_published", "counter", ("sink", "kind"), "Envelopes acknowledged by the broker"),
    ("cityedge_publish_errors", "counter", ("sink",), "Failed publishes and connects"),
    ("cityedge_sink_dropped", "counter", ("sink", "class"), "Envelopes a sink dropped"),
    ("cityedge_writes", "counter", ("device", "point", "result"), "Writes to devices by apps"),
    ("cityedge_frames", "counter", ("source", "camera", "outcome"), "Camera frames by outcome"),
    (
        "cityedge_faces_enrolled",
        "gauge",
        ("app", "status"),
        "People in a face store: current, or stale (enrolled with another model)",
    ),
    ("cityedge_outbox_depth", "gauge", ("sink", "class"), "Envelopes in the outbox"),
    ("cityedge_outbox_bytes", "gauge", ("sink",), "Bytes held in the outbox"),
    (
        "cityedge_outbox_oldest_age_seconds",
        "gauge",
        ("sink",),
        "Age of the oldest envelope waiting",
    ),
    ("cityedge_link_up", "gauge", ("sink",), "1 connected to the broker"),
    ("cityedge_outbox_disk_full", "gauge", ("sink",), "1 while the outbox's disk is full"),
    ("cityedge_link_session", "gauge", ("sink",), "Session number of the link"),
    (
        "cityedge_outbox_held",
        "gauge",
        ("sink",),
        "1 while the sources wait for the broker to catch up (back pressure)",
    ),
    (
        "cityedge_outbox_held_seconds",
        "gauge",
        ("sink",),
        "Seconds the sources waited for the broker to catch up, since the start",
    ),
    (
        "cityedge_sink_buffer_depth",
        "gauge",
        ("sink",),
        "Envelopes a sink without an outbox holds in memory (e.g. hj212)",
    ),
}
RUNTIME = {"cityedge_channel_depth", "cityedge_channel_capacity", "cityedge_channel_dropped"}
OWN = (ActuatorMetrics, CameraMetrics, FaceAccessMetrics, MqttSinkMetrics, Hj212SinkMetrics)


def declared(*holders: object) -> set[tuple[str, str | None, tuple[str, ...], str]]:
    return {
        (m._name, m._type, tuple(m._labelnames), m._documentation)
        for h in holders
        for m in vars(h).values()
        if isinstance(m, MetricWrapperBase)
    }


def test_the_core_and_the_parts_declare_the_families_dashboards_know() -> None:
    metrics = GatewayMetrics()
    own = [metrics.own(declare) for declare in OWN]
    assert declared(metrics, *own) == FAMILIES
    on_the_wire = {f.name for f in metrics.registry.collect()} - RUNTIME
    assert on_the_wire == {name for name, *_ in FAMILIES}


def test_a_part_declares_its_metrics_once_per_gateway() -> None:
    metrics, other = GatewayMetrics(), GatewayMetrics()
    first = metrics.own(CameraMetrics)
    assert metrics.own(CameraMetrics) is first  # a second camera source counts into the same
    assert other.own(CameraMetrics) is not first  # each gateway has its own registry
    names = {f.name for f in GatewayMetrics().registry.collect()}
    assert "cityedge_frames" not in names  # only a gateway with a camera shows the family
