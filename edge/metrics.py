"""The gateway's Prometheus metrics, in one registry per gateway (no global state).

The core declares the metrics every plug-in of a role shares (names; counters end in
``_total`` on the wire):

- sources: ``cityedge_polls_total{source,device}``,
  ``cityedge_poll_errors_total{source,device,reason}``,
  ``cityedge_poll_latency_seconds{source,device}`` (histogram), ``cityedge_readings_total``,
  ``cityedge_device_up{source,device}`` 1 answering, 0 unavailable
- the emitter: ``cityedge_events_total{kind}`` envelopes made
- sinks: ``cityedge_published_total{sink,kind}`` acknowledged by the peer,
  ``cityedge_publish_errors_total{sink}``, ``cityedge_sink_dropped_total{sink,class}``
  (dropped under the outbox's disk budget, refused by the broker, or unsendable)
- channels: ``cityedge_channel_depth{channel}``, ``cityedge_channel_capacity{channel}``,
  ``cityedge_channel_dropped_total{channel}`` — read from the channels at scrape time
- the supervisor: ``cityedge_plugin_restarts_total{plugin,role}``,
  ``cityedge_plugin_crashes_total{plugin,role}`` (ended with an exception),
  ``cityedge_plugin_up{plugin,role}``

A part's own metrics are declared where it lives, as a class built with the registry and got
through :meth:`GatewayMetrics.own` (once per gateway, however many instances use it):

- :class:`edge.actuators.ActuatorMetrics`: ``cityedge_writes_total{device,point,result}``
- :class:`edge.camera.source.CameraMetrics`: ``cityedge_frames_total{source,camera,outcome}``
- :class:`edge.face_access.app.FaceAccessMetrics`: ``cityedge_faces_enrolled{app,status}``
- :class:`edge.mqtt_sink.sink.MqttSinkMetrics`: ``cityedge_outbox_depth{sink,class}``,
  ``cityedge_outbox_bytes{sink}``, ``cityedge_outbox_oldest_age_seconds{sink}``,
  ``cityedge_outbox_disk_full{sink}``, ``cityedge_link_up{sink}``, ``cityedge_link_session{sink}``
- :class:`edge.hj212_sink.sink.Hj212SinkMetrics`: ``cityedge_sink_buffer_depth{sink}``

A family is on ``/metrics`` once a part that declares it is built. Names and labels are what
dashboards use: never change them (``tests/edge/test_metrics.py`` holds the list).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edge.supervisor import ChildState, Supervisor

M = TypeVar("M")

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


class _LoopCounterChild:
    """One labelled value of a :class:`LoopCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be increased")
        self.value += amount


class _LoopHistogramChild:
    """One labelled series of a :class:`LoopHistogram`: counts per bucket (not cumulative)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


C = TypeVar("C", _LoopCounterChild, _LoopHistogramChild)


class LoopMetric(Collector, Generic[C]):
    """A labelled family counted per poll or per envelope, on the event loop's thread only:
    plain numbers there (a ``prometheus_client`` counter takes a lock per increment, and its
    histogram four), read by :meth:`collect` when ``/metrics`` is scraped. The same family on
    the wire as the ``prometheus_client`` metric of that name, ``_created`` included."""

    _type: str

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: labels {self._labelnames}, given {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child

    @abstractmethod
    def _child(self) -> C:
        """A new labelled value."""

    def describe(self) -> list[Metric]:
        return [self._family()]

    @abstractmethod
    def _family(self) -> Metric:
        """The family, empty: what :meth:`describe` gives the registry, and what
        :meth:`collect` fills."""


class LoopCounter(LoopMetric[_LoopCounterChild]):
    _type = "counter"

    def _child(self) -> _LoopCounterChild:
        return _LoopCounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        yield family


class LoopHistogram(LoopMetric[_LoopHistogramChild]):
    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: list[str],
        registry: CollectorRegistry,
        buckets: tuple[float, ...],
    ) -> None:
        self._bounds = tuple(sorted(buckets))
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> _LoopHistogramChild:
        return _LoopHistogramChild(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.sum  # copies: the loop goes on counting
            cumulative, running = [], 0
            for bound, n in zip((*map(floatToGoString, self._bounds), "+Inf"), counts, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            family.add_metric(values, cumulative, total)
            family.add_sample(
                self._name + "_created",
                dict(zip(self._labelnames, values, strict=True)),
                child.created,
            )
        yield family


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # counted per poll or per envelope on the loop's thread: LoopCounter, LoopHistogram
        self.polls = LoopCounter("cityedge_polls", "Device polls", ["source", "device"], r)
        self.poll_errors = Counter(
            "cityedge_poll_errors",
            "Failed polls or points",
            ["source", "device", "reason"],
            registry=r,
        )
        self.poll_slots_missed = LoopCounter(
            "cityedge_poll_slots_missed",
            "Poll slots that passed while a poll or its delivery was under way (a slow "
            "device, or the sources waiting for the uplink)",
            ["source", "device"],
            r,
        )
        self.poll_latency = LoopHistogram(
            "cityedge_poll_latency_seconds",
            "Time to poll a device",
            ["source", "device"],
            r,
            buckets=_LATENCY_BUCKETS,
        )
        self.readings = LoopCounter(
            "cityedge_readings", "Point values read", ["source", "device"], r
        )
        self.device_up = Gauge(
            "cityedge_device_up", "Device answering", ["source", "device"], registry=r
        )
        self.events = LoopCounter("cityedge_events", "Envelopes made", ["kind"], r)
        self.published = LoopCounter(
            "cityedge_published", "Envelopes acknowledged by the broker", ["sink", "kind"], r
        )
        self.publish_errors = Counter(
            "cityedge_publish_errors", "Failed publishes and connects", ["sink"], registry=r
        )
        self.sink_dropped = Counter(
            "cityedge_sink_dropped", "Envelopes a sink dropped", ["sink", "class"], registry=r
        )
        self._runtime = _RuntimeCollector()
        r.register(self._runtime)
        self._own: dict[Callable[[CollectorRegistry], object], object] = {}

    def own(self, declare: Callable[[CollectorRegistry], M]) -> M:
        """The metrics a part declares itself: ``declare`` (its metrics class) is built with
        this gateway's registry the first time and shared by every later caller (two camera
        sources count into one ``cityedge_frames_total``, told apart by label)."""
        if declare not in self._own:
            self._own[declare] = declare(self.registry)
        return cast(M, self._own[declare])

    def watch_channel(self, channel: Any) -> None:
        self._runtime.channels.append(channel)

    def watch_supervisor(self, supervisor: Supervisor) -> None:
        self._runtime.supervisor = supervisor

    def render(self) -> bytes:
        return generate_latest(self.registry)
