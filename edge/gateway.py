"""The gateway process: builds the plug-ins of a site and runs them in stages.

::

    sources ──▶ readings ──▶ dispatcher ──▶ telemetry envelope ──▶ sink outboxes ──▶ sinks
                                  └──────▶ app inboxes ──▶ apps ──▶ events ──┘
    a batch's receipt ◀── dispatcher ◀── every durable sink: "stored" (on_stored, by envelope id)

A batch with a receipt (a sensor node's queued report) has it called once its telemetry is
stored by every sink that :class:`~edge.plugin.StoresDurably` (at once when there is none): the
node deletes the report only then.
    cameras ──▶ frames ──▶ frame dispatcher ──▶ app frame channels (drop_newest) ──▶ apps
    card/PIN readers ──▶ credentials ──▶ credential dispatcher ──▶ app credential channels ──▶ apps

Shutdown (SIGINT/SIGTERM) runs the stages backwards so nothing accepted is dropped: sources stop
polling; the readings channel closes and the dispatcher and apps drain it; the sinks' outboxes
close and the sinks flush what they hold; then the HTTP endpoint stops. Draining and flushing
together take at most ``shutdown_flush_s``: a stage still running then is cancelled and gets
:data:`STAGE_CLEANUP_S` to clean up (the mqtt sink stores what it holds and says goodbye)
before it is cancelled again. What a sink could not deliver by then stays in its outbox and is
logged with its count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.actuators import Actuators, Writer
from edge.channel import Channel, Overflow
from edge.clock import Clock, SystemClock
from edge.config.base import PluginConfig
from edge.config.site import LoadedSite
from edge.http import HttpEndpoint
from edge.metrics import GatewayMetrics
from edge.plugin import (
    AppContext,
    Emitter,
    Plugin,
    PluginContext,
    ReportsHealth,
    ServesRoutes,
    SinkContext,
    SourceContext,
    StoresDurably,
    TracksDevices,
)
from edge.readings import Credential, ReadingBatch
from edge.registry import PluginInfo, info_for, load
from edge.remote_config import RemoteConfig
from edge.supervisor import ChildSpec, Supervisor, cancel_and_wait
from protocols.envelope import Outgoing

if TYPE_CHECKING:
    from aiohttp import web

    from edge.vision.frames import Frame

log = logging.getLogger(__name__)

# A stage cancelled at the flush deadline gets this long before it is cancelled again; the mqtt
# sink's clean-up is bounded by cloud_bridge.uplink.bridge.SHUTDOWN_S (5 s).
STAGE_CLEANUP_S = 6.0
# cards and PINs: a person presents one every few seconds at most; more is a stuck or hostile
# reader, whose excess is dropped and counted (never telemetry: see edge.readings.Credential)
CREDENTIALS_CAPACITY = 16


@dataclass(frozen=True)
class BuiltPlugin:
    """One plug-in of the site as the gateway holds it: its registry entry, its config and the
    object built from them."""

    info: PluginInfo
    config: PluginConfig
    plugin: Plugin

    @property
    def name(self) -> str:
        return self.config.name

    def spec(self) -> ChildSpec:
        """How the supervisor runs it."""
        r = self.config.restart
        return ChildSpec(
            name=self.name,
            role=self.info.role,
            run=self.plugin.run,
            restart=r.policy,
            backoff_initial_s=r.backoff_initial_s,
            backoff_max_s=r.backoff_max_s,
        )


class Gateway:
    def __init__(
        self, site: LoadedSite, clock: Clock | None = None, remote: RemoteConfig | None = None
    ) -> None:
        self.site = site
        self.config = cfg = site.config
        self.clock = clock or SystemClock()
        self.metrics = GatewayMetrics()
        self.supervisor = Supervisor(self.clock)
        self.metrics.watch_supervisor(self.supervisor)
        self.routes: list[web.RouteDef] = []
        ch = cfg.channels
        self.readings: Channel[ReadingBatch] = Channel(
            "readings", ch.readings.capacity, ch.readings.overflow
        )
        self.metrics.watch_channel(self.readings)
        self.frames: Channel[Frame] = Channel("frames", ch.frames.capacity, ch.frames.overflow)
        self.metrics.watch_channel(self.frames)
        self.app_frames: dict[str, tuple[PluginConfig, Channel[Frame]]] = {}
        self.credentials: Channel[Credential] = Channel(
            "credentials", CREDENTIALS_CAPACITY, Overflow.DROP_NEWEST
        )
        self.metrics.watch_channel(self.credentials)
        self.app_credentials: dict[str, tuple[PluginConfig, Channel[Credential]]] = {}
        self.emitter = Emitter(cfg.site, cfg.gateway, self.clock, self._deliver, self.metrics)
        self.actuators = Actuators(self.metrics)
        self.sink_outboxes: dict[str, Channel[Outgoing]] = {}
        # envelope id -> [the batch's receipt, durable sinks that have not stored it yet]
        self._receipts: dict[str, list[Any]] = {}
        self.app_inboxes: dict[str, Channel[ReadingBatch]] = {}
        self.sources: list[BuiltPlugin] = []
        self.apps: list[BuiltPlugin] = []
        self.sinks: list[BuiltPlugin] = []
        for sink in cfg.sinks:
            box: Channel[Outgoing] = Channel(
                f"sink:{sink.name}", ch.sink_outbox.capacity, ch.sink_outbox.overflow
            )
            self.sink_outboxes[sink.name] = box
            self.metrics.watch_channel(box)
            sink_ctx = SinkContext(
                **self._common(sink.name),
                outbox=box,
                commands=remote.handlers() if remote else {},
                on_link_up=remote.link_up if remote else None,
                on_stored=self._stored,
            )
            self.sinks.append(self._build(sink, sink_ctx))
        self._durable = sum(isinstance(b.plugin, StoresDurably) for b in self.sinks)
        for app in cfg.apps:
            inbox: Channel[ReadingBatch] = Channel(
                f"app:{app.name}", ch.app_inbox.capacity, ch.app_inbox.overflow
            )
            self.app_inboxes[app.name] = inbox
            self.metrics.watch_channel(inbox)
            frames: Channel[Frame] = Channel(
                f"frames:{app.name}", ch.app_frames.capacity, ch.app_frames.overflow
            )
            self.app_frames[app.name] = (app, frames)
            self.metrics.watch_channel(frames)
            creds: Channel[Credential] = Channel(
                f"credentials:{app.name}", CREDENTIALS_CAPACITY, Overflow.DROP_NEWEST
            )
            self.app_credentials[app.name] = (app, creds)
            self.metrics.watch_channel(creds)
            ctx = AppContext(
                **self._common(app.name),
                inbox=inbox,
                actuators=self.actuators,
                frames=frames,
                credentials=creds,
            )
            self.apps.append(self._build(app, ctx))
        for source in cfg.sources:
            self.sources.append(
                self._build(
                    source,
                    SourceContext(
                        **self._common(source.name),
                        readings=self.readings,
                        frames=self.frames,
                        credentials=self.credentials,
                    ),
                )
            )
        for built in self.sources:
            if isinstance(built.plugin, Writer):
                for device in site.catalog.devices:
                    if site.catalog.owners.get(device) == built.name:
                        self.actuators.register(device, built.plugin)
        self.http = HttpEndpoint(cfg.http, self) if cfg.http.enabled else None

    def _common(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "site": self.config.site,
            "gateway": self.config.gateway,
            "clock": self.clock,
            "metrics": self.metrics,
            "emitter": self.emitter,
            "check": self.site.check,
        }

    def _build(self, config: PluginConfig, ctx: PluginContext) -> BuiltPlugin:
        info = info_for(config)
        plugin = load(info)(config, ctx)
        if isinstance(plugin, ServesRoutes):
            self.routes.extend(plugin.routes)
        return BuiltPlugin(info, config, plugin)

    def health(self) -> tuple[list[str], list[str]]:
        """Why the gateway works only in part now (crashed plug-ins, a full outbox disk), and
        what people should know though all works (an outbox set aside): for ``/healthz``."""
        reasons = self.supervisor.degraded()
        notices: list[str] = []
        for built in (*self.sources, *self.apps, *self.sinks):
            if isinstance(built.plugin, ReportsHealth):
                reasons.extend(f"{built.name}: {r}" for r in built.plugin.health())
                notices.extend(f"{built.name}: {n}" for n in built.plugin.notices())
        return reasons, notices

    def device_health(self) -> dict[str, str]:
        """Each polled device's health ('unknown', 'up', 'down'), from sources that track it."""
        out: dict[str, str] = {}
        for built in self.sources:
            if isinstance(built.plugin, TracksDevices):
                out.update(built.plugin.device_health())
        return out

    async def _deliver(self, envelope: Outgoing) -> None:
        for box in self.sink_outboxes.values():
            if box.put_now(envelope) is None:
                await box.put(envelope)

    async def _dispatch(self) -> None:
        async for batch in self.readings:
            item = self.emitter.encoded_telemetry(batch)
            if batch.receipt is not None and self._durable:
                self._receipts[item.id] = [batch.receipt, self._durable]
            await self.emitter.send(item)
            if batch.receipt is not None and not self._durable:
                batch.receipt()  # no sink keeps it on disk: delivered is as far as it goes
            for inbox in self.app_inboxes.values():
                await inbox.put(batch)
        for inbox in self.app_inboxes.values():
            inbox.close()

    def _stored(self, ids: Sequence[str]) -> None:
        for i in ids:
            waiting = self._receipts.get(i)
            if waiting is None:
                continue
            waiting[1] -= 1
            if waiting[1] <= 0:
                del self._receipts[i]
                waiting[0]()

    async def _dispatch_frames(self) -> None:
        async for frame in self.frames:
            for config, box in self.app_frames.values():
                if config.wants_frames(frame.camera):
                    await box.put(frame)
        for _, box in self.app_frames.values():
            box.close()

    async def _dispatch_credentials(self) -> None:
        async for credential in self.credentials:
            for config, box in self.app_credentials.values():
                if config.wants_credentials(credential.reader):
                    await box.put(credential)
        for _, box in self.app_credentials.values():
            box.close()

    async def run(self, stop: asyncio.Event) -> None:
        sup = self.supervisor
        log.info(
            "gateway %s/%s starting: %d sources, %d apps, %d sinks",
            self.config.site,
            self.config.gateway,
            len(self.sources),
            len(self.apps),
            len(self.sinks),
        )
        async with asyncio.TaskGroup() as tg:
            http_task = None
            if self.http is not None:
                http_task = tg.create_task(
                    sup.supervise(ChildSpec("http", "service", self.http.run))
                )
            sinks = tg.create_task(sup.run_to_end(s.spec() for s in self.sinks))
            apps = tg.create_task(
                sup.run_to_end(
                    [
                        ChildSpec("dispatcher", "service", self._dispatch),
                        ChildSpec("frame-dispatcher", "service", self._dispatch_frames),
                        ChildSpec("credential-dispatcher", "service", self._dispatch_credentials),
                        *(a.spec() for a in self.apps),
                    ]
                )
            )
            await sup.run_until((s.spec() for s in self.sources), stop)
            deadline = asyncio.get_running_loop().time() + self.config.shutdown_flush_s
            log.info("stopping: sources stopped; draining %d readings", self.readings.depth)
            self.readings.close()
            self.frames.close()
            self.credentials.close()
            await self._stage_ends(apps, "the dispatcher and apps did not drain", deadline)
            for box in self.sink_outboxes.values():
                box.close()
            await self._stage_ends(sinks, "sinks did not flush", deadline)
            if http_task is not None:
                await cancel_and_wait([http_task])
        log.info("gateway stopped")

    async def _stage_ends(self, stage: asyncio.Task[None], late: str, deadline: float) -> None:
        """Let a stage finish by ``deadline``; then cancel it (and again, should its clean-up
        outlast STAGE_CLEANUP_S)."""
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({stage}, timeout=timeout)
        if not done:
            log.warning("%s within %.1f s: stopping them", late, self.config.shutdown_flush_s)
            await cancel_and_wait([stage], again_every_s=STAGE_CLEANUP_S)
