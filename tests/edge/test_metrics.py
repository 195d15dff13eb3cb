"""Metric names, types, labels and help are what dashboards use: the core declares the ones a
role shares, each part declares its own (:meth:`GatewayMetrics.own`), and together they are the
same families as ever."""

from __future__ import annotations

import pytest
from prometheus_client.metrics import MetricWrapperBase

from edge.actuators import ActuatorMetrics
from edge.camera.source import CameraMetrics
from edge.face_access.app import FaceAccessMetrics
from edge.hj212_sink.sink import Hj212SinkMetrics
from edge.metrics import GatewayMetrics, LoopMetric
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
        if isinstance(m, MetricWrapperBase | LoopMetric)
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


def test_loop_counted_families_read_as_prometheus_client_would_write_them() -> None:
    """Polls, readings, latency and envelopes are counted in plain numbers on the loop's thread
    (no lock per increment); on the wire they are what prometheus_client wrote before."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    ours = GatewayMetrics()
    theirs = CollectorRegistry()
    polls = Counter("cityedge_polls", "Device polls", ["source", "device"], registry=theirs)
    latency = Histogram(
        "cityedge_poll_latency_seconds",
        "Time to poll a device",
        ["source", "device"],
        registry=theirs,
        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
    )
    for value in (0.0, 0.001, 0.0010001, 0.3, 5.0, 7.5, 1e-9):
        ours.poll_latency.labels("bus", "a").observe(value)
        latency.labels("bus", "a").observe(value)
    ours.polls.labels("bus", "a").inc()
    polls.labels("bus", "a").inc()
    ours.polls.labels("bus", "b").inc(3)
    polls.labels("bus", "b").inc(3)

    def samples(registry: CollectorRegistry, family: str) -> list[tuple[str, object, float]]:
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for f in registry.collect()
            if f.name == family
            for s in f.samples
            if not s.name.endswith("_created")
        )

    for family in ("cityedge_polls", "cityedge_poll_latency_seconds"):
        assert samples(ours.registry, family) == samples(theirs, family)
    text = generate_latest(ours.registry).decode()
    assert 'cityedge_poll_latency_seconds_bucket{device="a",le="0.001",source="bus"} 3.0' in text
    assert 'cityedge_polls_created{device="b",source="bus"}' in text
    with pytest.raises(ValueError, match="only be increased"):
        ours.polls.labels("bus", "a").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        ours.polls.labels("bus")
