"""The one builder of plug-in contexts for tests: what the gateway gives a source, an app or a
sink (:mod:`edge.plugin`), with a fresh metrics registry and every envelope the plug-in sends
kept in a list instead of going to sinks.

``site`` and ``gateway`` default to ``s`` and ``g``; ``clock`` to the system clock;
``base_dir`` (where the site file would be: profiles, model stores) to the working folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from edge.actuators import Actuators
from edge.channel import Channel
from edge.clock import Clock, SystemClock
from edge.config.base import CheckContext
from edge.metrics import GatewayMetrics
from edge.plugin import AppContext, Emitter, PluginContext, SinkContext, SourceContext
from edge.readings import ReadingBatch
from protocols import envelope as env

if TYPE_CHECKING:
    from edge.vision.frames import Frame

C = TypeVar("C", bound=PluginContext)
E = TypeVar("E", bound=env.EnvelopeModel)


@dataclass
class Built(Generic[C]):
    """A context and what the test reads back: the metrics and the envelopes sent."""

    ctx: C
    events: list[env.EnvelopeModel] = field(default_factory=list)

    @property
    def metrics(self) -> GatewayMetrics:
        return self.ctx.metrics

    def of(self, cls: type[E]) -> list[E]:
        """The envelopes of one kind sent so far."""
        return [e for e in self.events if isinstance(e, cls)]


def build(
    kind: type[C],
    name: str,
    *,
    clock: Clock | None = None,
    metrics: GatewayMetrics | None = None,
    base_dir: Path = Path("."),
    site: str = "s",
    gateway: str = "g",
    **role: Any,
) -> Built[C]:
    """A context of ``kind`` (:class:`~edge.plugin.SourceContext`, ``AppContext`` or
    ``SinkContext``); ``role`` holds that role's own fields (``readings``, ``inbox``,
    ``outbox``, ``frames``, ...)."""
    clock = clock or SystemClock()
    metrics = metrics or GatewayMetrics()
    events: list[env.EnvelopeModel] = []

    async def deliver(e: env.Outgoing) -> None:
        events.append(env.as_model(e))

    ctx = kind(
        name=name,
        site=site,
        gateway=gateway,
        clock=clock,
        metrics=metrics,
        emitter=Emitter(site, gateway, clock, deliver, metrics),
        check=CheckContext(base_dir),
        **role,
    )
    return Built(ctx, events)


def source(
    name: str = "bus",
    *,
    readings: Channel[ReadingBatch] | None = None,
    frames: Channel[Frame] | None = None,
    **common: Any,
) -> Built[SourceContext]:
    role: dict[str, Any] = {"readings": readings or Channel("readings", 100)}
    if frames is not None:
        role["frames"] = frames
    return build(SourceContext, name, **role, **common)


def app(
    name: str,
    *,
    inbox: Channel[ReadingBatch] | None = None,
    actuators: Actuators | None = None,
    frames: Channel[Frame] | None = None,
    metrics: GatewayMetrics | None = None,
    **common: Any,
) -> Built[AppContext]:
    """An app's context; ``actuators`` default to an empty router (no device writable)."""
    metrics = metrics or GatewayMetrics()
    role: dict[str, Any] = {
        "inbox": inbox or Channel(f"app:{name}", 100),
        "actuators": actuators or Actuators(metrics),
    }
    if frames is not None:
        role["frames"] = frames
    return build(AppContext, name, metrics=metrics, **role, **common)


def sink(
    name: str, *, outbox: Channel[env.EnvelopeModel] | None = None, **common: Any
) -> Built[SinkContext]:
    return build(SinkContext, name, outbox=outbox or Channel(f"sink:{name}", 100), **common)
