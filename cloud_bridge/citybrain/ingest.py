"""``cityedge ingest``: the city brain's side. Subscribe, validate, dedupe, store, acknowledge.

::

    broker ──$share/{group}/cityedge/v1/+/+/+/+──▶ worker ──batch──▶ Store (one transaction)
           ──cityedge/v1/+/+/state (retained)────▶        ◀──commit── then PUBACK each message

- **Shared subscription.** Every worker of one ``group`` subscribes to
  ``$share/{group}/cityedge/v1/+/+/+/+`` (MQTT 5 shared subscriptions; mosquitto also serves
  3.1.1 clients): the broker hands each message to one of them. States (births and deaths,
  retained) are read by every worker on a plain subscription, because a shared subscription gets
  no retained messages (MQTT 5.0, 4.8.2); storing a state is idempotent.
- **Nothing is lost between broker and database.** Messages are acknowledged by hand, in order,
  only after the transaction that stored them committed; a worker that dies before that gets
  them again (its session is persistent: ``clean_session`` false with a session expiry). When
  the store is slower than the broker, the link stops reading its socket (TCP holds the broker
  back) instead of dropping: mosquitto 2.0 was seen sending past the Receive Maximum.
- **Validation.** The topic must be in the tree, the payload a valid envelope, and the topic's
  site, gateway, kind and device must be the envelope's (a gateway cannot pass off an envelope as
  another's). Anything else goes to ``dead_letters`` with the reason.
- **Dedupe** by envelope id (a unique key); duplicates are counted, never stored.
- **Heartbeats.** Once subscribed, a worker says so every ``heartbeat_s`` on
  ``cityedge/host/{group}/{worker}`` (not retained; its will says ``offline``). Gateways set to
  wait for the city brain (``wait_for_ingest``) publish only while a live heartbeat of their group
  is fresh, and keep everything in their outbox otherwise: as Sparkplug B's edge nodes do while
  the primary host is away. This also closes a hole in mosquitto 2.0, which does not restore
  shared subscriptions from its persistence file after a restart (measured here): without the
  wait, what gateways publish between the broker's restart and the workers' return is lost.
- **Gateways and gaps.** Births and deaths keep each gateway's state and session; when a session
  has ended, its sequence numbers are checked and missing ones recorded in ``gaps`` and logged.
- **The connection** is a :class:`cloud_bridge.session.MqttSession` (reconnects with backoff,
  subscribes again, says an outage once). The heartbeat (per connection) and the gap check run
  as tasks of the ingest's own task groups, on the injected clock: a failure in either ends
  :meth:`Ingest.run` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloud_bridge.aio import Clock, SystemClock, unless_stopped
from cloud_bridge.backoff import Backoff
from cloud_bridge.citybrain.store import Batch, DeadLetter, Incoming, SessionKey, Store, StoreError
from cloud_bridge.link import LinkError, LinkLost, LinkSettings, Message, MqttLink, Will
from cloud_bridge.session import MqttSession, SessionSettings, Subscription
from protocols import boundedjson, topics
from protocols import envelope as env
from protocols.commands import decode_reply
from protocols.errors import DecodeError, ProtocolError
from protocols.session import HostState, LinkState, decode_state

log = logging.getLogger(__name__)

DATA_FILTER = topics.DATA_FILTER
STATE_FILTER = topics.STATE_FILTER


@dataclass(frozen=True)
class IngestSettings:
    link: LinkSettings
    group: str | None = "ingest"
    worker: str = ""
    batch_max: int = 500
    batch_wait_ms: int = 20
    gap_check_s: float = 5.0
    heartbeat_s: float = 2.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    # said with every gap found: why sequence numbers can be missing on this transport
    gap_why: str = "lost between the gateway and the city brain"

    @property
    def data_filter(self) -> str:
        return topics.shared(self.group, DATA_FILTER) if self.group else DATA_FILTER


def default_worker() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


NUL_REASON = (
    "a string holds U+0000 (NUL): no field needs it and PostgreSQL cannot store it "
    "(check the sender's encoder)"
)


def holds_nul(payload: bytes) -> bool:
    """True when a JSON string in ``payload`` holds U+0000. Such a message would fail its whole
    batch in PostgreSQL (jsonb and text refuse it) and be retried for ever; it is a dead
    letter instead. The byte scan is the fast path: a JSON text holds NUL only escaped."""
    if b"\\u0000" not in payload:
        return False
    try:  # bounded: a hostile nesting must not reach the recursion limit here
        todo: list[object] = [boundedjson.loads(payload, max_bytes=len(payload))]
    except DecodeError:
        return False  # not JSON, or past the limits: the decoder says why
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def classify(msg: Message, batch: Batch) -> None:
    """Put one message where it belongs in ``batch`` (pure: no I/O)."""
    try:
        t = topics.parse(msg.topic)
    except ProtocolError as err:
        batch.dead.append(DeadLetter(msg.topic, msg.payload, f"topic: {err}"))
        return
    if holds_nul(msg.payload):
        batch.dead.append(DeadLetter(msg.topic, msg.payload, NUL_REASON))
        return
    try:
        if t.kind == topics.STATE:
            state = decode_state(msg.payload)
            if (state.site, state.gateway) != (t.site, t.gateway):
                raise ProtocolError("state message names another gateway than its topic")
            batch.states.append(state)
        elif t.kind == topics.COMMAND:
            if t.device == "res":
                reply = decode_reply(msg.payload)
                if (reply.site, reply.gateway) != (t.site, t.gateway):
                    raise ProtocolError("reply names another gateway than its topic")
                batch.replies.append(reply)
            # requests are the city brain's own: nothing to store
        else:
            e = env.decode(msg.payload)
            if (e.site, e.gateway, e.kind, e.device) != (t.site, t.gateway, t.kind, t.device):
                raise ProtocolError(
                    f"envelope is {e.site}/{e.gateway}/{e.kind}/{e.device} but came on "
                    f"{t.site}/{t.gateway}/{t.kind}/{t.device}"
                )
            batch.events.append(Incoming(e, msg.payload))
    except ProtocolError as err:
        batch.dead.append(DeadLetter(msg.topic, msg.payload, str(err)))


class Ingest:
    def __init__(self, settings: IngestSettings, store: Store, clock: Clock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.worker = settings.worker or default_worker()
        self.stored = 0
        self.duplicates = 0
        self.dead = 0
        self.on_batch: Callable[[Batch], None] | None = None
        self._sessions: set[SessionKey] = set()
        self._store_backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; reconnects with backoff while the broker is away."""
        s = self.settings
        session = MqttSession(
            SessionSettings(
                link=s.link,
                subscriptions=(
                    Subscription(s.data_filter, qos=1),
                    Subscription(STATE_FILTER, qos=1),
                ),
                reconnect_initial_s=s.reconnect_initial_s,
                reconnect_max_s=s.reconnect_max_s,
                name=f"ingest {self.worker}",
            ),
            clock=self.clock,
            stop=stop,
            will=self._will,
        )
        async with asyncio.TaskGroup() as tg:
            gaps = tg.create_task(self.gap_loop(stop), name=f"ingest {self.worker} gap check")
            try:
                async with session:
                    async for link in session.links():
                        await self._connected(link, stop)
            finally:
                gaps.cancel()

    async def _connected(self, link: MqttLink, stop: asyncio.Event) -> None:
        """One connection: heartbeats beside the consumer until the link is lost or ``stop``;
        then, if it can, the worker says it went offline."""
        try:
            async with asyncio.TaskGroup() as tg:
                beat = tg.create_task(self._heartbeat(link), name=f"ingest {self.worker} heartbeat")
                try:
                    await self._consume(link, stop)
                finally:
                    beat.cancel()
        finally:
            if link.connected:
                with contextlib.suppress(LinkError, TimeoutError):
                    async with asyncio.timeout(2):
                        await link.publish(self.host_topic, self.host_state(LinkState.OFFLINE))

    @property
    def host_topic(self) -> str:
        return topics.host_state_topic(self.settings.group or "ingest", self.worker)

    def host_state(self, state: LinkState) -> bytes:
        return (
            HostState(
                state=state,
                group=self.settings.group or "ingest",
                worker=self.worker,
                time=datetime.fromtimestamp(self.clock.time(), UTC),
                interval_s=self.settings.heartbeat_s,
            )
            .model_dump_json()
            .encode()
        )

    async def _will(self) -> Will:
        return Will(self.host_topic, self.host_state(LinkState.OFFLINE), qos=1, retain=False)

    async def _heartbeat(self, link: MqttLink) -> None:
        """Tell gateways that wait for the city brain that this worker is subscribed and alive."""
        while link.connected:
            try:
                await link.send(self.host_topic, self.host_state(LinkState.ONLINE), qos=0)
            except LinkLost:
                return
            await self.clock.sleep(self.settings.heartbeat_s)

    async def _consume(self, link: MqttLink, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = [await link.receive(timeout_s=0.5)]
            except TimeoutError:
                continue
            except LinkLost:
                return  # the session says so (once an outage) and connects again
            deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
            while len(got) < self.settings.batch_max:
                try:
                    got.append(await link.receive(max(0.0, deadline - time.monotonic())))
                except (TimeoutError, LinkLost):
                    break
            await self._store(got, link, stop)

    async def _store(self, got: list[Message], link: MqttLink, stop: asyncio.Event) -> None:
        if await self.store_batch(got, stop):
            for msg in got:
                link.ack(msg)

    async def store_batch(self, got: Sequence[Message], stop: asyncio.Event) -> bool:
        """Classify ``got`` and store it in one transaction, retrying with backoff while the
        database is away. True once committed: only then may the transport acknowledge the
        messages; False when stopped first (nothing acknowledged: the broker sends them again).
        Every transport (MQTT here, NATS in :mod:`~cloud_bridge.citybrain.ingest_nats`) feeds
        its messages through this one path."""
        batch = Batch()
        for msg in got:
            classify(msg, batch)
        while True:
            try:
                result = await self.store.write(batch, self.worker)
                break
            except StoreError as err:
                # not acknowledged: the broker keeps the messages for this session
                log.error("ingest %s: cannot store a batch: %s; retrying", self.worker, err)
                await unless_stopped(self.clock.sleep(self._store_backoff.next_delay()), stop)
                if stop.is_set():
                    return False
        self._store_backoff.reset()
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.dead += len(batch.dead)
        self._sessions |= result.sessions
        for d in batch.dead:
            log.warning("ingest %s: dead letter on %s: %s", self.worker, d.topic, d.reason)
        if self.on_batch is not None:
            self.on_batch(batch)
        return True

    async def gap_loop(self, stop: asyncio.Event) -> None:
        """Every ``gap_check_s`` until ``stop``: :meth:`check_gaps`."""
        while not stop.is_set():
            await unless_stopped(self.clock.sleep(self.settings.gap_check_s), stop)
            await self.check_gaps()

    async def check_gaps(self) -> None:
        if not self._sessions:
            return
        sessions, self._sessions = self._sessions, set()
        try:
            found, still_open = await self.store.check_gaps(sessions)
        except StoreError as err:
            log.error("ingest %s: gap check failed: %s", self.worker, err)
            self._sessions |= sessions
            return
        self._sessions |= still_open
        for g in found:
            log.warning(
                "ingest %s: gateway %s/%s session %d ended with %d of %d sequence numbers "
                "missing (%s)",
                self.worker,
                g.site,
                g.gateway,
                g.session,
                g.missing,
                g.highest,
                self.settings.gap_why,
            )
