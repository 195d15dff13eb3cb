"""The gateway process: builds the plug-ins of a site and runs them in stages.

::

    sources ──▶ readings ──▶ dispatcher ──▶ telemetry envelope ──▶ sink outboxes ──▶ sinks
                                  └──────▶ app inboxes ──▶ apps ──▶ events ──┘
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
from typing import TYPE_CHECKING, Any

from edge.actuators import Actuators
from edge.channel import Channel, Overflow
from edge.clock import Clock, SystemClock
from edge.config.site import LoadedSite
from edge.http import HttpEndpoint
from edge.metrics import GatewayMetrics
from edge.plugin import AppContext, Emitter, Plugin, PluginContext, SinkContext, SourceContext
from edge.readings import Credential, ReadingBatch
from edge.registry import PluginInfo, info_for, load
from edge.remote_config import RemoteConfig
from edge.supervisor import ChildSpec, Supervisor, cancel_and_wait
from protocols.envelope import EnvelopeModel

if TYPE_CHECKING:
    from edge.vision.frames import Frame

log = logging.getLogger(__name__)

# A stage cancelled at the flush deadline gets this long before it is cancelled again; the mqtt
# sink's clean-up is bounded by cloud_bridge.uplink.bridge.SHUTDOWN_S (5 s).
STAGE_CLEANUP_S = 6.0
# cards and PINs: a person presents one every few seconds at most; more is a stuck or hostile
# reader, whose excess is dropped and counted (never telemetry: see edge.readings.Credential)
CREDENTIALS_CAPACITY = 16


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
        self.routes: list[Any] = []
        ch = cfg.channels
        self.readings: Channel[ReadingBatch] = Channel(
            "readings", ch.readings.capacity, ch.readings.overflow
        )
        self.metrics.watch_channel(self.readings)
        self.frames: Channel[Frame] = Channel("frames", ch.frames.capacity, ch.frames.overflow)
        self.metrics.watch_channel(self.frames)
        self.app_frames: dict[str, tuple[Any, Channel[Frame]]] = {}
        self.credentials: Channel[Credential] = Channel(
            "credentials", CREDENTIALS_CAPACITY, Overflow.DROP_NEWEST
        )
        self.metrics.watch_channel(self.credentials)
        self.app_credentials: dict[str, tuple[Any, Channel[Credential]]] = {}
        self.emitter = Emitter(cfg.site, cfg.gateway, self.clock, self._deliver, self.metrics)
        self.actuators = Actuators(self.metrics)
        self.sink_outboxes: dict[str, Channel[EnvelopeModel]] = {}
        self.app_inboxes: dict[str, Channel[ReadingBatch]] = {}
        self.sources: list[tuple[PluginInfo, Any, Plugin]] = []
        self.apps: list[tuple[PluginInfo, Any, Plugin]] = []
        self.sinks: list[tuple[PluginInfo, Any, Plugin]] = []
        for sink in cfg.sinks:
            box: Channel[EnvelopeModel] = Channel(
                f"sink:{sink.name}", ch.sink_outbox.capacity, ch.sink_outbox.overflow
            )
            self.sink_outboxes[sink.name] = box
            self.metrics.watch_channel(box)
            sink_ctx = SinkContext(
                **self._common(sink.name),
                outbox=box,
                commands=remote.handlers() if remote else {},
                on_link_up=remote.link_up if remote else None,
            )
            self.sinks.append(self._build(sink, sink_ctx))
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
        for _, _, plugin in self.sources:
            write = getattr(plugin, "write", None)
            if callable(write):
                for device in site.catalog.devices:
                    if site.catalog.owners.get(device) == getattr(plugin, "name", None):
                        self.actuators.register(device, plugin)  # type: ignore[arg-type]
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

    def _build(self, config: Any, ctx: PluginContext) -> tuple[PluginInfo, Any, Plugin]:
        info = info_for(config)
        factory = load(info)
        plugin: Plugin = factory(config, ctx)
        if hasattr(plugin, "routes"):
            self.routes.extend(plugin.routes)
        return info, config, plugin

    def health(self) -> tuple[list[str], list[str]]:
        """Why the gateway works only in part now (crashed plug-ins, a full outbox disk), and
        what people should know though all works (an outbox set aside): for ``/healthz``."""
        reasons = self.supervisor.degraded()
        notices: list[str] = []
        for _, config, plugin in (*self.sources, *self.apps, *self.sinks):
            for what, out in (("health", reasons), ("notices", notices)):
                report = getattr(plugin, what, None)
                if callable(report):
                    out.extend(f"{config.name}: {r}" for r in report())
        return reasons, notices

    def device_health(self) -> dict[str, str]:
        """Each polled device's health ('unknown', 'up', 'down'), from sources that track it."""
        out: dict[str, str] = {}
        for _, _, plugin in self.sources:
            health = getattr(plugin, "device_health", None)
            if callable(health):
                out.update(health())
        return out

    async def _deliver(self, envelope: EnvelopeModel) -> None:
        for box in self.sink_outboxes.values():
            await box.put(envelope)

    async def _dispatch(self) -> None:
        async for batch in self.readings:
            await self.emitter.send(self.emitter.telemetry(batch))
            for inbox in self.app_inboxes.values():
                await inbox.put(batch)
        for inbox in self.app_inboxes.values():
            inbox.close()

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

    @staticmethod
    def _spec(info: PluginInfo, config: Any, plugin: Plugin) -> ChildSpec:
        r = config.restart
        return ChildSpec(
            name=config.name,
            role=info.role,
            run=plugin.run,
            restart=r.policy,
            backoff_initial_s=r.backoff_initial_s,
            backoff_max_s=r.backoff_max_s,
        )

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
            sinks = tg.create_task(sup.run_to_end(self._spec(*s) for s in self.sinks))
            apps = tg.create_task(
                sup.run_to_end(
                    [
                        ChildSpec("dispatcher", "service", self._dispatch),
                        ChildSpec("frame-dispatcher", "service", self._dispatch_frames),
                        ChildSpec("credential-dispatcher", "service", self._dispatch_credentials),
                        *(self._spec(*a) for a in self.apps),
                    ]
                )
            )
            await sup.run_until((self._spec(*s) for s in self.sources), stop)
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
