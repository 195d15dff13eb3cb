"""Sink ``mqtt``: every envelope goes through the durable outbox to the city brain's broker.

The sink is the gateway's end of :class:`cloud_bridge.uplink.bridge.Bridge`: *intake* moves envelopes
from the sink's channel into the bridge (committed to the SQLite outbox within
``outbox.group_commit_ms``, before anything is published); the bridge publishes from the outbox
in order and deletes an envelope only once the broker acknowledged it. While the broker is away
the outbox grows on disk up to ``outbox.budget_bytes``; a restart or power cut keeps it.

Downlink commands arrive on the gateway's ``cmd/req`` topic; ``ping`` and ``outbox.stats`` are
the bridge's own, ``config.get`` and ``config.apply`` come from the gateway (see
:mod:`edge.remote_config`) through ``ctx.commands``.

The sink :class:`~edge.plugin.StoresDurably`: after each commit it tells ``ctx.on_stored`` the
ids of the envelopes committed (the bridge commits in the order it was given them), which is
what a sensor node's end-to-end acknowledgement waits for.

When the bridge fails (a task of it crashed, the outbox file went bad), the sink fails with it
and the gateway's supervisor starts it again. What the sink had taken from its channel and the
bridge had not stored yet is kept in memory and put first into the next bridge, so a restart
loses nothing that was accepted. :meth:`MqttSink.health` tells ``/healthz`` about a full disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from cloud_bridge.link import LinkSettings, TlsSettings
from cloud_bridge.session import Endpoint
from cloud_bridge.uplink.bridge import Bridge, BridgeSettings
from cloud_bridge.uplink.commands import Handler
from cloud_bridge.uplink.outbox import CommitResult, OutboxSettings, Record, record_of
from edge.channel import ChannelClosed
from edge.mqtt_sink.config import MqttConnectionConfig, MqttSinkConfig
from edge.plugin import Plugin, ReportsHealth, SinkContext, StoresDurably
from protocols import envelope as env
from protocols.signed import public_key_from_raw, unb64url
from protocols.topics import data_topic

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
INTAKE_BATCH = 256  # envelopes taken from the channel and handed to the bridge at once


def link_settings(
    config: MqttConnectionConfig, default_client_id: str, max_inflight: int = 100
) -> LinkSettings:
    """The link's settings from the broker connection of an ``mqtt`` sink or source."""
    tls = None
    if config.tls is not None:
        tls = TlsSettings(
            ca_file=config.tls.ca_file,
            cert_file=config.tls.cert_file,
            key_file=config.tls.key_file,
            insecure_skip_verify=config.tls.insecure_skip_verify,
        )
    return LinkSettings(
        host=config.host,
        port=config.port,
        client_id=config.client_id or default_client_id,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        tls=tls,
        protocol=config.protocol,
        keepalive_s=config.keepalive_s,
        connect_timeout_s=config.connect_timeout_s,
        max_inflight=max_inflight,
    )


def outbox_path(config: MqttSinkConfig, base_dir: Path) -> Path:
    path = config.outbox.path or Path("cityedge-state") / f"outbox-{config.name}.db"
    return path if path.is_absolute() else base_dir / path


def bridge_settings(
    config: MqttSinkConfig, site: str, gateway: str, base_dir: Path
) -> BridgeSettings:
    o = config.outbox
    return BridgeSettings(
        site=site,
        gateway=gateway,
        link=link_settings(config, f"{site}-{gateway}", config.max_inflight),
        outbox_path=outbox_path(config, base_dir),
        outbox=OutboxSettings(
            budget_bytes=o.budget_bytes,
            telemetry_overflow=o.telemetry_overflow,
            event_overflow=o.event_overflow,
            wal_limit_bytes=o.wal_limit_bytes,
        ),
        hold_backlog=o.hold_backlog,
        group_commit_ms=0 if o.durability == "fsync" else o.group_commit_ms,
        qos=config.qos,
        reconnect_initial_s=config.reconnect_initial_s,
        reconnect_max_s=config.reconnect_max_s,
        command_keys={
            kid: public_key_from_raw(unb64url(raw)) for kid, raw in config.commands.keys.items()
        },
        command_max_ttl_s=config.commands.max_ttl_s,
        wait_for_ingest=config.wait_for_ingest,
        endpoints=endpoints(config),
    )


def endpoints(config: MqttConnectionConfig) -> tuple[Endpoint, ...]:
    """The brokers after ``host:port`` (validated by the config as host:port)."""
    return tuple(
        Endpoint(host, int(port)) for host, _, port in (e.rpartition(":") for e in config.endpoints)
    )


class MqttSinkMetrics:
    """The outbox and the link of each ``mqtt`` sink, by ``sink`` (its name)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
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
        self.held = Gauge(
            "cityedge_outbox_held",
            "1 while the sources wait for the broker to catch up (back pressure)",
            ["sink"],
            registry=r,
        )
        self.held_seconds = Gauge(
            "cityedge_outbox_held_seconds",
            "Seconds the sources waited for the broker to catch up, since the start",
            ["sink"],
            registry=r,
        )
        self.link_session = Gauge(
            "cityedge_link_session", "Session number of the link", ["sink"], registry=r
        )


class MqttSink(Plugin, ReportsHealth, StoresDurably):
    stores_durably = True

    def __init__(
        self,
        config: MqttSinkConfig,
        ctx: SinkContext,
        commands: Mapping[str, Handler] | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.settings = bridge_settings(config, ctx.site, ctx.gateway, ctx.check.base_dir)
        self.commands = dict(commands or ctx.commands)
        self.metrics = ctx.metrics.own(MqttSinkMetrics)
        self._link_up_told = False
        self.bridge: Bridge | None = None
        # accepted, not stored by a bridge that stopped: the next one takes them first
        self._carry: list[Record] = []
        self._topics: dict[tuple[str, str, str, str], str] = {}
        self._counted: dict[tuple[str, str], list[Any]] = {}  # metric children by what, kind
        self._failures_seen = 0  # the session's connect failures already counted
        self._held_before = 0.0  # seconds the sources waited, under bridges that stopped
        # ids of what was given to a bridge and not committed yet, in the order given
        self._uncommitted: deque[str] = deque()

    async def run(self) -> None:
        async with Bridge.open(self.settings, self.ctx.clock, self.commands) as bridge:
            self.bridge = bridge
            bridge.on_commit = self._on_commit
            bridge.on_count = self._count
            stopped = False
            try:
                async with asyncio.TaskGroup() as tg:
                    stats = tg.create_task(self._stats_loop(bridge))
                    tg.create_task(self._intake(bridge))
                    await bridge.run()
                    stats.cancel()
            except asyncio.CancelledError:
                stopped = True
                raise
            finally:
                self._carry[:0] = bridge.leftover()
                if stopped:
                    self._lost_at_stop()
                self._gauge(bridge)
                self._held_before += bridge.counters.held_s

    async def _intake(self, bridge: Bridge) -> None:
        # what a bridge that stopped did not store comes first, then the channel, in batches
        # of what waits there: held in _carry until the bridge has them
        box = self.ctx.outbox
        while True:
            if self._carry:
                await bridge.put_many(self._carry)
                self._carry.clear()
            try:
                items = await box.get_batch(INTAKE_BATCH)
            except ChannelClosed:
                break
            self._carry.extend(self._record(item) for item in items)
            self._uncommitted.extend(str(item.id) for item in items)
        bridge.close_intake()

    def _record(self, item: env.Outgoing) -> Record:
        key = (item.site, item.gateway, item.kind, item.device)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) >= 65_536:
                self._topics.clear()
            topic = self._topics[key] = data_topic(*key)
        return record_of(item, topic)

    def _lost_at_stop(self) -> None:
        """The gateway stopped the sink past its flush deadline: what it holds is lost."""
        if not self._carry:
            return
        lost: dict[str, int] = {}
        for r in self._carry:
            lost[r.cls.value] = lost.get(r.cls.value, 0) + 1
        for cls, n in lost.items():
            self.ctx.metrics.sink_dropped.labels(self.config.name, cls).inc(n)
        log.error(
            "sink %s stopped before storing %d accepted envelopes (%s): lost",
            self.config.name,
            len(self._carry),
            ", ".join(f"{n} {c}" for c, n in lost.items()),
        )
        self._carry.clear()
        self._uncommitted.clear()

    def health(self) -> list[str]:
        """Why the sink works only in part now (``/healthz`` says degraded); empty: all well."""
        return self.bridge.health() if self.bridge is not None else []

    def notices(self) -> list[str]:
        return self.bridge.notices() if self.bridge is not None else []

    def _on_commit(self, result: CommitResult) -> None:
        n = min(len(result.positions), len(self._uncommitted))
        stored = [self._uncommitted.popleft() for _ in range(n)]
        if stored and self.ctx.on_stored is not None:
            self.ctx.on_stored(stored)
        for cls, n in result.dropped.items():
            if n:
                self.ctx.metrics.sink_dropped.labels(self.config.name, cls.value).inc(n)

    def _gauge(self, bridge: Bridge) -> None:
        m, own, name = self.ctx.metrics, self.metrics, self.config.name
        st = bridge.stats_cache
        for cls, cs in st.classes.items():
            own.outbox_depth.labels(name, cls).set(cs.depth)
        own.outbox_bytes.labels(name).set(st.bytes)
        ages = [cs.oldest_age_s for cs in st.classes.values() if cs.oldest_age_s is not None]
        own.outbox_oldest_age.labels(name).set(max(ages) if ages else 0.0)
        own.link_up.labels(name).set(1 if bridge.connected.is_set() else 0)
        own.link_session.labels(name).set(bridge.counters.session)
        own.held.labels(name).set(1 if bridge.holding_intake else 0)
        own.held_seconds.labels(name).set(self._held_before + bridge.counters.held_s)
        own.outbox_disk_full.labels(name).set(1 if bridge.outbox.disk_full is not None else 0)
        failures = bridge.counters.connect_failures  # counted by the session, seldom
        if failures > self._failures_seen:
            m.publish_errors.labels(name).inc(failures - self._failures_seen)
            self._failures_seen = failures

    def _count(self, what: str, kind: str) -> None:
        """The bridge counted a publish or a refusal: the metrics move now (a refusal is a
        dropped envelope and a publish error)."""
        children = self._counted.get((what, kind))
        if children is None:
            m, name = self.ctx.metrics, self.config.name
            children = self._counted[what, kind] = (
                [m.published.labels(name, kind)]
                if what == "published"
                else [m.sink_dropped.labels(name, "refused"), m.publish_errors.labels(name)]
            )
        for child in children:
            child.inc()

    async def _stats_loop(self, bridge: Bridge) -> None:
        while True:
            await bridge.refresh_stats()
            self._gauge(bridge)
            if bridge.connected.is_set() and not self._link_up_told:
                self._link_up_told = True
                if self.ctx.on_link_up is not None:
                    self.ctx.on_link_up()
            await self.ctx.clock.sleep(STATS_INTERVAL_S)
