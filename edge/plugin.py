"""The one plug-in contract for sources, apps and sinks.

A plug-in is a class built as ``Plugin(config, ctx)`` whose ``async run()`` does its work until
cancelled (sources) or until its input channel closes (apps, sinks): :class:`Plugin`. It is
chosen by ``type:`` in YAML from the explicit registry in :mod:`edge.registry`, which imports
the class only when the gateway builds it and checks it is a :class:`Plugin` (a
:class:`PluginFactory`). What it may touch comes in ``ctx``:

- every plug-in: its name, the site and gateway ids, the clock, the metrics (a plug-in declares
  its own with :meth:`~edge.metrics.GatewayMetrics.own`), the :class:`Emitter` (to send events)
  and the check context (where profiles live);
- a source: ``readings``, the channel it puts :class:`~edge.readings.ReadingBatch` into, and
  ``frames``, the channel it puts camera :class:`~edge.vision.frames.Frame` s into (a camera
  source uses the second, a Modbus source the first), and ``credentials``, where a card or PIN
  reader puts what was presented (:class:`~edge.readings.Credential`: never telemetry);
- an app: ``inbox``, its own channel of reading batches, ``frames``, its own channel of the
  frames of the cameras its config asks for (:meth:`~edge.config.base.PluginConfig.wants_frames`;
  ``drop_newest`` by default, so a busy app skips frames and they are counted), ``credentials``,
  the cards and PINs of the readers it follows (:meth:`~edge.config.base.PluginConfig.wants_credentials`),
  and ``actuators`` to write to devices;
- a sink: ``outbox``, its own channel of envelopes to deliver: models, and telemetry already
  encoded (:class:`~protocols.envelope.Encoded`; :func:`~protocols.envelope.as_model` gives
  its model, :func:`~protocols.envelope.wire_bytes` anything's bytes).

Optional abilities are Protocols too. A plug-in names those it has among its base classes (so
mypy checks their signatures), and the gateway finds them with ``isinstance``:

- :class:`~edge.actuators.Writer` (and :class:`~edge.actuators.MultiWriter`): a source writes
  to the devices it owns; the gateway routes apps' writes to it;
- :class:`TracksDevices`: a source says how each of its devices is (``/healthz`` ``devices``);
- :class:`ServesRoutes`: HTTP routes beside ``/healthz`` and ``/metrics`` (the gate screen);
- :class:`ReportsHealth`: reasons the gateway works only in part, and notices (``/healthz``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from edge.actuators import Actuators
from edge.channel import Channel, Overflow
from edge.clock import Clock
from edge.config.base import CheckContext
from edge.metrics import GatewayMetrics
from edge.readings import Credential, ReadingBatch
from protocols import envelope as env
from protocols.ids import Uuid7Generator

if TYPE_CHECKING:  # numpy is only installed with the vision extra
    from aiohttp import web

    from edge.vision.frames import Frame

E = TypeVar("E", bound=env.EnvelopeModel)


@runtime_checkable
class Plugin(Protocol):
    """What every source, app and sink is."""

    async def run(self) -> None:
        """Work until cancelled (a source) or until the input channel closes (an app, a sink)."""
        ...


class PluginFactory(Protocol):
    """What a registry entry names: a class built as ``factory(config, ctx)`` (``config`` the
    entry's config model, ``ctx`` the context of its role)."""

    def __call__(self, config: Any, ctx: Any, /) -> Plugin: ...


@runtime_checkable
class TracksDevices(Protocol):
    """A source's ability: the health of each device it polls."""

    def device_health(self) -> dict[str, str]:
        """Device name → ``unknown``, ``up`` or ``down``."""
        ...


@runtime_checkable
class ServesRoutes(Protocol):
    """A plug-in's ability: routes the gateway's HTTP endpoint serves (set when it is built)."""

    routes: Sequence[web.RouteDef]


@runtime_checkable
class ReportsHealth(Protocol):
    """A plug-in's ability: what ``/healthz`` should say about it beyond the supervisor's view."""

    def health(self) -> list[str]:
        """Why the plug-in works only in part now (``/healthz`` says degraded); empty: all well."""
        ...

    def notices(self) -> list[str]:
        """What people should know though all works (e.g. an outbox set aside at start)."""
        ...


@runtime_checkable
class StoresDurably(Protocol):
    """A sink's ability: it stores what it is given on disk before delivering it, and calls its
    context's ``on_stored`` with the envelope ids once they are stored (a sensor node's
    end-to-end acknowledgement waits for every such sink)."""

    stores_durably: bool


class Emitter:
    """Builds envelopes with ids and times from the injected clock, and sends them out."""

    def __init__(
        self,
        site: str,
        gateway: str,
        clock: Clock,
        deliver: Callable[[env.Outgoing], Awaitable[None]],
        metrics: GatewayMetrics,
    ) -> None:
        self.site = site
        self.gateway = gateway
        self.clock = clock
        self._deliver = deliver
        self._metrics = metrics
        self._ids = Uuid7Generator()
        self._encoder = env.TelemetryEncoder(site, gateway)
        self._counted: dict[str, Any] = {}  # the events counter's child per kind

    def _head(self, device: str, time: float) -> dict[str, Any]:
        return {
            "id": self._ids.new(int(self.clock.time() * 1000)),
            "site": self.site,
            "gateway": self.gateway,
            "device": device,
            "time": env.utc_datetime(time),
        }

    def telemetry(self, batch: ReadingBatch) -> env.TelemetryEnvelope:
        payload = env.TelemetryPayload(
            readings=[
                env.PointValue(point=r.point, value=r.value, unit=r.unit) for r in batch.readings
            ],
            origin=env.Origin(boot=batch.origin[0], seq=batch.origin[1]) if batch.origin else None,
        )
        return env.TelemetryEnvelope(**self._head(batch.device, batch.time), payload=payload)

    def encoded_telemetry(self, batch: ReadingBatch) -> env.Encoded:
        """The telemetry envelope of ``batch`` built straight as bytes (as :meth:`telemetry`
        would encode, without the model: the gateway makes one per poll)."""
        return self._encoder.encode(
            self._ids.new_str(int(self.clock.time() * 1000)),
            batch.device,
            batch.time,
            batch.readings,
            batch.origin,
        )

    def alarm(self, device: str, time: float, payload: env.AlarmPayload) -> env.AlarmEnvelope:
        return env.AlarmEnvelope(**self._head(device, time), payload=payload)

    def availability(
        self, device: str, time: float, payload: env.AvailabilityPayload
    ) -> env.AvailabilityEnvelope:
        return env.AvailabilityEnvelope(**self._head(device, time), payload=payload)

    def access(self, device: str, time: float, payload: env.AccessPayload) -> env.AccessEnvelope:
        return env.AccessEnvelope(**self._head(device, time), payload=payload)

    def aggregate(
        self, device: str, time: float, payload: env.AggregatePayload
    ) -> env.AggregateEnvelope:
        return env.AggregateEnvelope(**self._head(device, time), payload=payload)

    def event(self, cls: type[E], device: str, time: float, payload: Any) -> E:
        """An envelope of any event kind (``cls``: its envelope model, e.g.
        :class:`~protocols.envelope.SignalPlanEnvelope`)."""
        return cls(**self._head(device, time), payload=payload)

    async def send(self, envelope: env.Outgoing) -> None:
        """Hand an envelope to every sink (waits while a sink's channel is full)."""
        counted = self._counted.get(envelope.kind)
        if counted is None:
            counted = self._counted[envelope.kind] = self._metrics.events.labels(envelope.kind)
        counted.inc()
        await self._deliver(envelope)


@dataclass
class PluginContext:
    name: str
    site: str
    gateway: str
    clock: Clock
    metrics: GatewayMetrics
    emitter: Emitter
    check: CheckContext

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(logging.getLogger(f"edge.{self.name}"), {"plugin": self.name})


def _no_frames() -> Channel[Frame]:
    return Channel("frames", 1, Overflow.DROP_NEWEST)


def _no_credentials() -> Channel[Credential]:
    return Channel("credentials", 1, Overflow.DROP_NEWEST)


@dataclass
class SourceContext(PluginContext):
    readings: Channel[ReadingBatch]
    frames: Channel[Frame] = field(default_factory=_no_frames)
    credentials: Channel[Credential] = field(default_factory=_no_credentials)


@dataclass
class AppContext(PluginContext):
    inbox: Channel[ReadingBatch]
    actuators: Actuators
    frames: Channel[Frame] = field(default_factory=_no_frames)
    credentials: Channel[Credential] = field(default_factory=_no_credentials)


@dataclass
class SinkContext(PluginContext):
    outbox: Channel[env.Outgoing]  # models, and telemetry already encoded (env.Encoded)
    # downlink command handlers the gateway offers (config.get, config.apply), and what to call
    # when the sink's link to the broker is up (ends a config.apply trial)
    commands: Mapping[str, Any] = field(default_factory=dict)
    on_link_up: Callable[[], None] | None = None
    # what a StoresDurably sink calls with the ids of envelopes it has stored on disk
    on_stored: Callable[[Sequence[str]], None] | None = None
