"""Sink ``mqtt``: deliver envelopes to the city brain's broker at QoS 1.

Two tasks: *intake* moves envelopes from the sink's channel into a :class:`PendingBuffer` (so
the gateway keeps polling while the broker is away), *deliver* publishes from the buffer through
an in-flight window and removes an envelope only when the broker acknowledged it. When the link
drops, unacknowledged envelopes go back to the front of the buffer in their original order and
are sent again after reconnecting (at least once; the ingest removes duplicates by id).

Until the durable outbox lands, what is held lives in memory only: see the README.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Literal, Protocol
from uuid import UUID

from pydantic import SecretStr

from cloud_bridge.link import LinkError, LinkLost, LinkRefused, LinkSettings, MqttLink, TlsSettings
from edge.backoff import Backoff
from edge.plugin import SinkContext
from edge.sinks.buffer import PendingBuffer
from edge.sinks.mqtt_config import MqttSinkConfig, TlsConfig
from protocols import envelope as env
from protocols import topics

log = logging.getLogger(__name__)


class BrokerConfig(Protocol):
    """What a config needs to make a link (the ``mqtt`` sink's and the ``mqtt`` source's)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def tls(self) -> TlsConfig | None: ...
    @property
    def protocol(self) -> Literal["auto", "5", "3.1.1"]: ...
    @property
    def keepalive_s(self) -> int: ...
    @property
    def connect_timeout_s(self) -> float: ...


def link_settings(
    config: BrokerConfig, default_client_id: str, max_inflight: int = 100
) -> LinkSettings:
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


class MqttSink:
    def __init__(self, config: MqttSinkConfig, ctx: SinkContext) -> None:
        self.config = config
        self.ctx = ctx
        self.settings = link_settings(config, f"{ctx.site}-{ctx.gateway}", config.max_inflight)
        self.buffer = PendingBuffer(config.buffer_capacity)
        self.inflight: dict[UUID, env.EnvelopeModel] = {}
        self.link: MqttLink | None = None
        self._intake_done = asyncio.Event()
        self._wake = asyncio.Event()
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._outage_logged = False
        self._dropped_seen = dict(self.buffer.dropped)

    @property
    def _done(self) -> bool:
        return self._intake_done.is_set() and not len(self.buffer) and not self.inflight

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._intake())
                tg.create_task(self._deliver())
        finally:
            undelivered = len(self.buffer) + len(self.inflight)
            if undelivered:
                log.warning(
                    "sink %s: %d envelopes held in memory were not acknowledged and are lost",
                    self.config.name,
                    undelivered,
                )
            if self.link is not None:
                await self.link.close()

    def _gauge(self) -> None:
        m = self.ctx.metrics
        m.sink_buffer.labels(self.config.name).set(len(self.buffer) + len(self.inflight))
        for cls, count in self.buffer.dropped.items():
            if count > self._dropped_seen[cls]:
                m.sink_dropped.labels(self.config.name, cls).inc(count - self._dropped_seen[cls])
                self._dropped_seen[cls] = count

    async def _intake(self) -> None:
        async for item in self.ctx.outbox:
            self.buffer.add(item)
            self._gauge()
            self._wake.set()
        self._intake_done.set()
        self._wake.set()

    async def _connect(self) -> MqttLink:
        where = f"{self.config.host}:{self.config.port}"
        while True:
            try:
                link = await MqttLink.open(self.settings)
            except LinkError as err:
                self.ctx.metrics.publish_errors.labels(self.config.name).inc()
                if not self._outage_logged:
                    hint = (
                        "check user name, password, client certificate and the broker's ACL"
                        if isinstance(err, LinkRefused)
                        else "check the broker is running and reachable"
                    )
                    log.warning(
                        "sink %s: broker %s unavailable: %s (%s); retrying with backoff, %d held",
                        self.config.name,
                        where,
                        err,
                        hint,
                        len(self.buffer),
                    )
                    self._outage_logged = True
                await self.ctx.clock.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            if self._outage_logged:
                log.info(
                    "sink %s: broker %s reachable again; sending %d held envelopes",
                    self.config.name,
                    where,
                    len(self.buffer) + len(self.inflight),
                )
                self._outage_logged = False
            return link

    def _link_lost(self, why: str) -> None:
        if not self._outage_logged:
            log.warning("sink %s: lost the broker (%s); holding envelopes", self.config.name, why)
            self._outage_logged = True
        self.buffer.requeue(self.inflight.values())
        self.inflight.clear()
        self.link = None
        self._gauge()

    async def _deliver(self) -> None:
        while not self._done:
            if self.link is None or not self.link.connected:
                if self.link is not None:
                    self._link_lost(self.link.lost_reason)
                self.link = await self._connect()
            item = self.buffer.take()
            if item is None:
                self._wake.clear()
                if self._done:
                    return
                waiters = {
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(self.link.wait_lost()),
                }
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in pending:
                    w.cancel()
                continue
            topic = topics.data_topic(item.site, item.gateway, item.kind, item.device)
            try:
                ack = await self.link.send(topic, env.encode(item), qos=self.config.qos)
            except LinkLost:
                self.buffer.requeue([item])
                continue
            self.inflight[item.id] = item
            ack.add_done_callback(partial(self._acked, item))

    def _acked(self, item: env.EnvelopeModel, ack: asyncio.Future[None]) -> None:
        err = ack.exception() if not ack.cancelled() else LinkLost("cancelled")
        if isinstance(err, LinkLost):
            return  # stays in flight; requeued in order when the loss is handled
        self.inflight.pop(item.id, None)
        if isinstance(err, LinkRefused):
            self.ctx.metrics.publish_errors.labels(self.config.name).inc()
            self.ctx.metrics.sink_dropped.labels(self.config.name, "refused").inc()
            log.error(
                "sink %s: broker refused %s envelope %s from %s: %s; dropped "
                "(check the broker's ACL for this gateway)",
                self.config.name,
                item.kind,
                item.id,
                item.device,
                err,
            )
        elif err is None:
            self.ctx.metrics.published.labels(self.config.name, item.kind).inc()
        self._gauge()
        if self._intake_done.is_set():
            self._wake.set()
