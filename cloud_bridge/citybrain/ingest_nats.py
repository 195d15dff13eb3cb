"""``cityedge ingest --nats``: the ingest on a NATS JetStream cluster (the city's broker).

::

    gateways ──MQTT 3.1.1 QoS 1──▶ any node ──stored in $MQTT_msgs (R3)──▶ durable pull consumer
                                                                          {group}, shared by
                                                                          every worker
    worker: fetch ≤ batch_max ──▶ Ingest.store_batch (one transaction) ──commit──▶ ack each

- **Where the messages are read.** NATS's MQTT layer acknowledges a QoS 1 publish once it is
  stored in its own replicated stream ``$MQTT_msgs`` (subject ``$MQTT.msgs.<topic as subject>``).
  The workers read that stream directly, through one durable pull consumer filtered to
  ``$MQTT.msgs.cityedge.v1.>``: a stream of our own capturing ``cityedge.v1.>`` is fed by a
  plain publish that is dropped while that stream has no leader, and lost thousands of
  acknowledged messages in a fail-over here; the consumer on ``$MQTT_msgs`` lost none.
- **One work queue.** Every worker of a ``group`` binds the same durable consumer (named after
  the group): JetStream hands each message to one of them, no ``$share`` needed. A message is
  acknowledged only after the transaction that stored it committed; one a worker took and never
  acknowledged (it died) is handed out again after ``ack_wait_s``. Duplicates are the store's to
  drop (unique envelope ids), as with MQTT.
- **The stream exists once an MQTT client connected.** ``$MQTT_msgs`` has interest retention:
  what is published while no consumer exists is not kept. The worker waits for the stream (said
  once), makes the consumer, and only then sends heartbeats, so gateways that wait for their city
  brain (``wait_for_ingest``) keep their envelopes in the outbox until it is there.
- **Heartbeats** go out as plain NATS publishes on the heartbeat topic's subject; NATS delivers
  them to the gateways' MQTT subscriptions. NATS has no will: on a clean stop the worker says
  ``offline``; after a crash its heartbeats stop and the gateways' freshness check sees it.
- **Validation, dedupe, dead letters, gaps** are the MQTT ingest's own
  (:meth:`~cloud_bridge.citybrain.ingest.Ingest.store_batch`, ``gap_loop``). NATS acknowledges a
  publish outside the gateway's permissions and drops it (only its log says so): the gap check
  then reports the gateway's session with sequence numbers missing, and says that this is why.
- **Outages.** nats-py reconnects to any node of ``servers`` on its own; this module says the
  loss once and the return once, and backs off (capped, jittered) while fetching fails, e.g.
  while the stream elects a new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cloud_bridge.aio import unless_stopped
from cloud_bridge.backoff import Backoff
from cloud_bridge.citybrain.ingest import Ingest
from cloud_bridge.link import Message
from protocols import topics
from protocols.session import LinkState

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

STREAM = topics.NATS_MQTT_STREAM
FILTER = topics.NATS_MQTT_PREFIX + topics.nats_subject(topics.ROOT) + ".>"
GAP_WHY = (
    "NATS acknowledges a publish outside a gateway's permissions and drops it, which its server "
    "log names: check this gateway's topic prefix against its broker user; else they were lost "
    "before the cluster stored them"
)


@dataclass(frozen=True)
class NatsSettings:
    servers: tuple[str, ...]  # nats://host:port of the cluster's nodes
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_timeout_s: float = 5.0
    ack_wait_s: float = 30.0  # a message taken and not acknowledged is handed out again after
    max_ack_pending: int = 20_000  # taken and unacknowledged, across the group's workers

    def tls(self) -> ssl.SSLContext | None:
        if self.ca_file is None and self.cert_file is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


def message_of(msg: Msg) -> Message:
    """The MQTT message a gateway published, from its copy in ``$MQTT_msgs``."""
    return Message(topics.topic_of_nats_subject(msg.subject), msg.data, qos=1, retain=False)


def _where(nc: Client) -> str:
    url = nc.connected_url
    return url.netloc if url is not None else "?"


class NatsIngest:
    """One ingest worker on a NATS cluster (see the module's docstring); ``ingest`` does the
    validation, storing and gap checks, as for MQTT."""

    def __init__(self, ingest: Ingest, settings: NatsSettings) -> None:
        self.ingest = ingest
        self.settings = settings
        self.clock = ingest.clock
        self.worker = ingest.worker
        self.group = ingest.settings.group or "ingest"
        s = ingest.settings
        self._backoff = Backoff(s.reconnect_initial_s, s.reconnect_max_s)
        self._outage_said = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``."""
        nc = await self._connect(stop)
        if nc is None:
            return
        try:
            js = nc.jetstream(timeout=self.settings.connect_timeout_s)
            sub = await self._consumer(js, stop)
            if sub is None:
                return
            async with asyncio.TaskGroup() as tg:
                gaps = tg.create_task(self.ingest.gap_loop(stop), name=f"ingest {self.worker} gaps")
                beat = tg.create_task(self._heartbeat(nc, stop), name=f"ingest {self.worker} beat")
                try:
                    await self._consume(sub, stop)
                finally:
                    gaps.cancel()
                    beat.cancel()
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.publish(self._subject, self.ingest.host_state(LinkState.OFFLINE))
                await nc.flush(timeout=2)
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.close()

    @property
    def _subject(self) -> str:
        return topics.nats_subject(self.ingest.host_topic)

    async def _connect(self, stop: asyncio.Event) -> Client | None:
        s = self.settings
        where = ", ".join(s.servers)

        async def lost() -> None:
            self._say_outage(f"lost the NATS cluster ({where}); reconnecting")

        async def back() -> None:
            self._say_back(f"NATS cluster reachable again ({_where(nc)})")

        async def error(err: Exception) -> None:
            log.debug("ingest %s: NATS: %s", self.worker, err)

        while not stop.is_set():
            nc = Client()
            try:
                async with asyncio.timeout(s.connect_timeout_s * (len(s.servers) + 1)):
                    await nc.connect(
                        servers=list(s.servers),
                        name=f"ingest {self.worker}",
                        connect_timeout=max(1, int(s.connect_timeout_s)),
                        reconnect_time_wait=1,
                        max_reconnect_attempts=-1,
                        user=s.user,
                        password=s.password,
                        tls=s.tls(),
                        disconnected_cb=lost,
                        reconnected_cb=back,
                        error_cb=error,
                    )
            except (nats.errors.Error, OSError, TimeoutError) as err:
                self._say_outage(
                    f"NATS cluster {where} unavailable: {err or 'timed out'} (check the nodes are "
                    "running and the user may connect); retrying with backoff"
                )
                await unless_stopped(self.clock.sleep(self._backoff.next_delay()), stop)
                continue
            self._backoff.reset()
            self._outage_said = False
            log.info("ingest %s: connected to the NATS cluster at %s", self.worker, _where(nc))
            return nc
        return None

    async def _consumer(
        self, js: JetStreamContext, stop: asyncio.Event
    ) -> JetStreamContext.PullSubscription | None:
        """Make (or find) the group's durable consumer on ``$MQTT_msgs`` and bind to it."""
        s = self.settings
        config = ConsumerConfig(
            durable_name=self.group,
            filter_subject=FILTER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            max_deliver=-1,
        )
        waiting_said = False
        while not stop.is_set():
            try:
                await js.add_consumer(STREAM, config)
                sub = await js.pull_subscribe_bind(self.group, stream=STREAM)
            except nats.js.errors.NotFoundError:
                delay = 1.0  # the first gateway may come any moment: look again soon
                if not waiting_said:
                    waiting_said = True
                    log.warning(
                        "ingest %s: no stream %s yet: NATS makes it when the first MQTT client "
                        "connects; waiting",
                        self.worker,
                        STREAM,
                    )
            except (nats.errors.Error, TimeoutError) as err:
                delay = self._backoff.next_delay()
                self._say_outage(f"cannot make the consumer {self.group} on {STREAM}: {err!r}")
            else:
                self._backoff.reset()
                log.info(
                    "ingest %s: consuming %s from %s as durable consumer %s",
                    self.worker,
                    FILTER,
                    STREAM,
                    self.group,
                )
                return sub
            await unless_stopped(self.clock.sleep(delay), stop)
        return None

    async def _heartbeat(self, nc: Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(self._subject, self.ingest.host_state(LinkState.ONLINE))
            await unless_stopped(self.clock.sleep(self.ingest.settings.heartbeat_s), stop)

    async def _consume(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        batch_max = self.ingest.settings.batch_max
        batch_wait_s = self.ingest.settings.batch_wait_ms / 1000
        while not stop.is_set():
            # The first message as soon as it comes, then what else comes within batch_wait_ms
            # (as the MQTT ingest batches): a pull for the whole batch is held by the server
            # until it is full or expires, which cost ~0.5 s of latency at a steady trickle.
            try:
                got = await sub.fetch(1, timeout=0.5)
            except TimeoutError:  # nothing to fetch (nats-py's own, or asyncio's)
                continue
            except (nats.errors.Error, nats.js.errors.Error) as err:
                # e.g. the stream electing a new leader, or the connection away: said once
                self._say_outage(f"cannot fetch from {STREAM}: {err!r}")
                await unless_stopped(self.clock.sleep(self._backoff.next_delay()), stop)
                continue
            try:
                got += await sub.fetch(batch_max - 1, timeout=max(0.001, batch_wait_s))
            except TimeoutError:
                pass  # no more within batch_wait_ms: store what there is
            except (nats.errors.Error, nats.js.errors.Error) as err:
                # stored below and acknowledged if it can be, else handed out again
                log.debug("ingest %s: fetching the rest of a batch: %r", self.worker, err)
            if not await self.ingest.store_batch([message_of(m) for m in got], stop):
                return  # stopped before the commit: nothing acknowledged, handed out again
            for m in got:
                with contextlib.suppress(nats.errors.Error):
                    # a lost acknowledgement only means a duplicate later, which is dropped
                    await m.ack()
            if self._outage_said:
                self._say_back(f"fetching from {STREAM} again")
            self._backoff.reset()

    def _say_outage(self, text: str) -> None:
        if not self._outage_said:
            self._outage_said = True
            log.warning("ingest %s: %s", self.worker, text)

    def _say_back(self, text: str) -> None:
        if self._outage_said:
            self._outage_said = False
            log.info("ingest %s: %s", self.worker, text)
