"""The gateway's Prometheus metrics, in one registry per gateway (no global state).

Names (counters end in ``_total`` on the wire):

- ``cityedge_polls_total{source,device}``, ``cityedge_poll_errors_total{source,device,reason}``,
  ``cityedge_poll_latency_seconds{source,device}`` (histogram), ``cityedge_readings_total``
- ``cityedge_device_up{source,device}`` 1 answering, 0 unavailable
- ``cityedge_writes_total{device,point,result}`` writes by apps (``ok`` / ``failed``)
- ``cityedge_frames_total{source,camera,outcome}`` camera frames: ``emitted``, ``static``
  (skipped by motion gating), ``rate`` (over the configured fps), ``dropped`` (channel full)
- ``cityedge_faces_enrolled{app,status}`` people enrolled (``current``) and ``stale`` ones
- ``cityedge_events_total{kind}`` envelopes made,
  ``cityedge_published_total{sink,kind}`` acknowledged by the broker,
  ``cityedge_publish_errors_total{sink}``
- ``cityedge_outbox_depth{sink,class}``, ``cityedge_outbox_bytes{sink}``,
  ``cityedge_outbox_oldest_age_seconds{sink}``, ``cityedge_sink_dropped_total{sink,class}``
  (dropped under the outbox's disk budget, or refused by the broker),
  ``cityedge_link_up{sink}``, ``cityedge_link_session{sink}``
- ``cityedge_channel_depth{channel}``, ``cityedge_channel_capacity{channel}``,
  ``cityedge_channel_dropped_total{channel}`` — read from the channels at scrape time
- ``cityedge_outbox_disk_full{sink}`` 1 while the outbox's disk is full (see ``/healthz``)
- ``cityedge_plugin_restarts_total{plugin,role}``, ``cityedge_plugin_crashes_total{plugin,role}``
  (ended with an exception), ``cityedge_plugin_up{plugin,role}``
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.supervisor import ChildState, Supervisor

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _RuntimeCollector(Collector):
    def __init__(self) -> None:
        self.channels: list[Any] = []
        self.supervisor: Supervisor | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("cityedge_channel_depth", "Items waiting", labels=["channel"])
        cap = GaugeMetricFamily("cityedge_channel_capacity", "Channel capacity", labels=["channel"])
        dropped = CounterMetricFamily(
            "cityedge_channel_dropped", "Items dropped by overflow policy", labels=["channel"]
        )
        for ch in self.channels:
            depth.add_metric([ch.name], ch.depth)
            cap.add_metric([ch.name], ch.capacity)
            dropped.add_metric([ch.name], ch.dropped)
        yield from (depth, cap, dropped)
        if self.supervisor is not None:
            restarts = CounterMetricFamily(
                "cityedge_plugin_restarts", "Restarts by the supervisor", labels=["plugin", "role"]
            )
            crashes = CounterMetricFamily(
                "cityedge_plugin_crashes", "Ended with an exception", labels=["plugin", "role"]
            )
            up = GaugeMetricFamily(
                "cityedge_plugin_up", "1 running, 0 not", labels=["plugin", "role"]
            )
            for name, st in self.supervisor.status.items():
                restarts.add_metric([name, st.role], st.restarts)
                crashes.add_metric([name, st.role], st.crashes)
                up.add_metric([name, st.role], 1 if st.state is ChildState.RUNNING else 0)
            yield from (restarts, crashes, up)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("cityedge_polls", "Device polls", ["source", "device"], registry=r)
        self.poll_errors = Counter(
            "cityedge_poll_errors",
            "Failed polls or points",
            ["source", "device", "reason"],
            registry=r,
        )
        self.poll_latency = Histogram(
            "cityedge_poll_latency_seconds",
            "Time to poll a device",
            ["source", "device"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.readings = Counter(
            "cityedge_readings", "Point values read", ["source", "device"], registry=r
        )
        self.device_up = Gauge(
            "cityedge_device_up", "Device answering", ["source", "device"], registry=r
        )
        self.events = Counter("cityedge_events", "Envelopes made", ["kind"], registry=r)
        self.published = Counter(
            "cityedge_published",
            "Envelopes acknowledged by the broker",
            ["sink", "kind"],
            registry=r,
        )
        self.publish_errors = Counter(
            "cityedge_publish_errors", "Failed publishes and connects", ["sink"], registry=r
        )
        self.writes = Counter(
            "cityedge_writes",
            "Writes to devices by apps",
            ["device", "point", "result"],
            registry=r,
        )
        self.frames = Counter(
            "cityedge_frames",
            "Camera frames by outcome",
            ["source", "camera", "outcome"],
            registry=r,
        )
        self.faces_enrolled = Gauge(
            "cityedge_faces_enrolled",
            "People in a face store: current, or stale (enrolled with another model)",
            ["app", "status"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "cityedge_outbox_depth", "Envelopes in the outbox", ["sink", "class"], registry=r
        )
        self.outbox_bytes = Gauge(
            "cityedge_outbox_bytes", "Bytes held in the outbox", ["sink"], registry=r
        )
        self.outbox_oldest_age = Gauge(
            "cityedge_outbox_oldest_age_seconds",
            "Age of the oldest envelope waiting",
            ["sink"],
            registry=r,
        )
        self.link_up = Gauge("cityedge_link_up", "1 connected to the broker", ["sink"], registry=r)
        self.outbox_disk_full = Gauge(
            "cityedge_outbox_disk_full", "1 while the outbox's disk is full", ["sink"], registry=r
        )
        self.link_session = Gauge(
            "cityedge_link_session", "Session number of the link", ["sink"], registry=r
        )
        self.sink_buffer = Gauge(
            "cityedge_sink_buffer_depth",
            "Envelopes a sink without an outbox holds in memory (e.g. hj212)",
            ["sink"],
            registry=r,
        )
        self.sink_dropped = Counter(
            "cityedge_sink_dropped", "Envelopes a sink dropped", ["sink", "class"], registry=r
        )
        self._runtime = _RuntimeCollector()
        r.register(self._runtime)

    def watch_channel(self, channel: Any) -> None:
        self._runtime.channels.append(channel)

    def watch_supervisor(self, supervisor: Supervisor) -> None:
        self._runtime.supervisor = supervisor

    def render(self) -> bytes:
        return generate_latest(self.registry)
