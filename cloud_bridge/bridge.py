"""The gateway's side of the link to the city brain: the durable outbox, the MQTT session and
the downlink commands, run as one unit.

::

    put(record) ──▶ pending ──committer (group commit, fsync)──▶ outbox (SQLite WAL)
                                                                   │ read in order, events first
    broker ◀── publish (session, seq, pos added) ◀── deliverer ◀───┘
       │  PUBACK ──▶ acked ──committer──▶ deleted from the outbox
       └─ cmd/req ──▶ CommandDesk ──▶ cmd/res

- **Stored before sent, deleted after acknowledged** (see :mod:`cloud_bridge.outbox`).
  ``group_commit_ms`` is the longest an accepted envelope waits in memory before its commit: a
  crash or power cut loses at most that much (plus one fsync), and nothing of it was published.
  ``group_commit_ms: 0`` commits as soon as anything waits (one fsync per commit).
- **Sessions.** Each connection takes a new session number from the outbox's database (committed
  before use), registers the death as its will, subscribes to its commands and publishes the
  birth; both retained on the ``state`` topic. Every envelope published carries
  ``link: {session, seq, pos}`` (see :class:`protocols.envelope.LinkInfo`), spliced into the
  stored JSON so nothing is encoded twice.
- **Order.** Within a class rows go out in position order; events (alarms, availability) go
  before telemetry. After a reconnect the deliverer starts again from the oldest row still
  stored, while new envelopes keep being committed behind it.
- **Reconnect** with capped, jittered exponential backoff.
- **Shutdown.** :meth:`Bridge.close_intake` then waiting on :meth:`Bridge.run` flushes; a cancel
  commits what is pending and publishes the death (``shutdown``) when it can. What is not yet
  acknowledged stays in the outbox for the next start.

All SQLite work runs in one worker thread, in order, so the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_bridge.backoff import Backoff
from cloud_bridge.commands import Audit, CommandDesk, Handler
from cloud_bridge.link import LinkError, LinkLost, LinkRefused, LinkSettings, MqttLink, Will
from cloud_bridge.outbox import (
    CommitResult,
    Outbox,
    OutboxClass,
    OutboxSettings,
    Record,
    Row,
    SqliteNonces,
)
from protocols import commands as cmd
from protocols import topics
from protocols.errors import ProtocolError
from protocols.session import GatewayState, LinkState, OutboxStats, decode_host, encode_state

log = logging.getLogger(__name__)

T = TypeVar("T")


class Clock(Protocol):
    """What the bridge needs of a clock (``edge.clock`` clocks fit)."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _WallClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True)
class BridgeSettings:
    site: str
    gateway: str
    link: LinkSettings
    outbox_path: Path
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    group_commit_ms: int = 100
    max_pending: int = 10_000  # accepted, not yet committed; put() waits beyond this
    qos: int = 1
    read_ahead: int = 256
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    birth_timeout_s: float = 10.0
    command_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    command_max_ttl_s: int = 3600
    # Publish only while a worker of this ingest group sends live heartbeats (see
    # cloud_bridge.ingest); None publishes whenever connected.
    wait_for_ingest: str | None = None


@dataclass
class BridgeCounters:
    published: dict[str, int] = field(default_factory=dict)  # by kind (topic level)
    refused: int = 0  # publishes the broker refused (ACL); the row is dropped and counted
    connects: int = 0
    connect_failures: int = 0
    session: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # by outbox class, this process


class Bridge:
    """Use as ``async with Bridge.open(settings) as bridge``, or :meth:`open` / :meth:`aclose`."""

    def __init__(
        self,
        settings: BridgeSettings,
        outbox: Outbox,
        executor: ThreadPoolExecutor,
        clock: Clock,
        handlers: Mapping[str, Handler],
        stats: OutboxStats,
        nonces: SqliteNonces,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.clock = clock
        self.counters = BridgeCounters()
        self.link: MqttLink | None = None
        self.connected = asyncio.Event()
        self.stats_cache = stats
        self.on_commit: Callable[[CommitResult], None] | None = None
        self._executor = executor
        self._pending: list[Record] = []
        self._acked: list[tuple[OutboxClass, int]] = []
        self._have_work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._committed = asyncio.Event()
        self._intake_closed = False
        self._committer_done = asyncio.Event()
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self._outage_logged = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._hosts: dict[str, float] = {}  # ingest worker -> when its heartbeat expires
        self._host_ok = asyncio.Event()
        self.waiting_for_ingest = False
        s = settings
        self._state_topic = topics.state_topic(s.site, s.gateway)
        self._req_topic = topics.command_request_topic(s.site, s.gateway)
        self._res_topic = topics.command_reply_topic(s.site, s.gateway)
        self._nonces = nonces
        self.commands = CommandDesk(
            site=s.site,
            gateway=s.gateway,
            keys=s.command_keys,
            handlers={"ping": self._ping, "outbox.stats": self._outbox_stats, **handlers},
            now=clock.time,
            check_nonce=self._check_nonce,
            record=self._audit,
            max_ttl_s=s.command_max_ttl_s,
        )

    @classmethod
    async def open(
        cls,
        settings: BridgeSettings,
        clock: Clock | None = None,
        handlers: Mapping[str, Handler] | None = None,
    ) -> Bridge:
        """Open (or create) the outbox; raises :class:`~cloud_bridge.outbox.OutboxError`."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        clk = clock or _WallClock()
        loop = asyncio.get_running_loop()
        try:
            outbox = await loop.run_in_executor(
                executor, Outbox, settings.outbox_path, settings.outbox, clk.time
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        stats = await loop.run_in_executor(executor, outbox.stats)
        nonces = await loop.run_in_executor(executor, outbox.nonces)
        return cls(settings, outbox, executor, clk, handlers or {}, stats, nonces)

    async def aclose(self) -> None:
        await self._db(self.outbox.close)
        self._executor.shutdown(wait=True)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db_now(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the database thread and wait without the loop (shutdown paths only)."""
        return self._executor.submit(fn, *args).result()

    # -- intake -------------------------------------------------------------------------------

    async def put(self, record: Record) -> None:
        """Accept one envelope; waits while ``max_pending`` wait for their commit."""
        while len(self._pending) >= self.settings.max_pending:
            self._room.clear()
            await self._room.wait()
        if self._intake_closed:
            raise RuntimeError("the bridge's intake is closed")
        self._pending.append(record)
        self._have_work.set()

    def close_intake(self) -> None:
        """No more :meth:`put`; :meth:`run` returns once everything is delivered."""
        self._intake_closed = True
        self._have_work.set()
        self._committed.set()  # wakes the deliverer to notice

    @property
    def backlog(self) -> int:
        """Envelopes not yet acknowledged: waiting for their commit or in the outbox."""
        return len(self._pending) + self.outbox.depth

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Commit and deliver until the intake is closed and everything is acknowledged."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._committer())
                tg.create_task(self._deliverer())
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._pending or self._acked:
            records, acked = self._pending, self._acked
            self._pending, self._acked = [], []
            self._db_now(self.outbox.commit, records, acked)
        link = self.link
        self.link = None
        if link is not None:
            await self._goodbye(link)
            await link.close()
        if self.outbox.depth:
            log.info(
                "bridge %s/%s: %d envelopes stay in the outbox %s for the next start",
                self.settings.site,
                self.settings.gateway,
                self.outbox.depth,
                self.settings.outbox_path,
            )

    async def _goodbye(self, link: MqttLink) -> None:
        """Publish the death ourselves: a clean disconnect does not fire the will."""
        if not link.connected:
            return
        try:
            async with asyncio.timeout(2):
                await link.publish(
                    self._state_topic, self._state(LinkState.OFFLINE, "shutdown"), 1, True
                )
        except (LinkError, TimeoutError):
            log.debug("could not publish the death on shutdown")

    async def _committer(self) -> None:
        wait_s = self.settings.group_commit_ms / 1000
        while True:
            await self._have_work.wait()
            if wait_s > 0 and (self._pending or self._acked):
                await self.clock.sleep(wait_s)  # gather a group; later arrivals join it
            self._have_work.clear()
            records, acked = self._pending, self._acked
            self._pending, self._acked = [], []
            self._room.set()
            if records or acked:
                result = await self._db(self.outbox.commit, records, acked)
                for c, n in result.dropped.items():
                    if n:
                        self.counters.dropped[c.value] = self.counters.dropped.get(c.value, 0) + n
                        log.warning(
                            "outbox over its budget of %d bytes: dropped %d %s envelopes "
                            "(oldest first); %d dropped in all",
                            self.settings.outbox.budget_bytes,
                            n,
                            c.value,
                            self.outbox.dropped[c],
                        )
                if self.on_commit is not None:
                    self.on_commit(result)
                self._committed.set()
            if self._intake_closed and not self._pending and self._drained():
                return

    def _drained(self) -> bool:
        return self.outbox.depth == 0 and not self._acked and self._inflight == 0

    async def _deliverer(self) -> None:
        while True:
            if self._intake_closed and not self._pending and self._drained():
                self._have_work.set()  # the committer may be waiting: it is done too
                return
            link = await self._connect()
            try:
                await self._session(link)
                await self._goodbye(link)  # drained after close_intake(): a clean stop
                self._have_work.set()  # the committer may be waiting: it is done too
            except LinkLost as err:
                self._note_loss(str(err))
            finally:
                self.connected.clear()
                self.link = None
                await link.close()
                # in-flight rows failed with LinkLost and stay stored; flush acks, forget
                # reservations, and start again from the oldest row on the next session
                await self._flush_acks()
                await self._db(self.outbox.release)

    def _note_loss(self, why: str) -> None:
        if not self._outage_logged:
            log.warning(
                "link to the broker lost (%s); %d envelopes kept in the outbox",
                why,
                self.backlog,
            )
            self._outage_logged = True

    async def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            await self._db(self.outbox.commit, [], acked)

    def _state(self, state: LinkState, reason: str = "", with_stats: bool = False) -> bytes:
        s = self.settings
        return encode_state(
            GatewayState(
                state=state,
                site=s.site,
                gateway=s.gateway,
                session=self.counters.session,
                time=datetime.fromtimestamp(self.clock.time(), tz=UTC),
                reason=reason,
                outbox=self.stats_cache if with_stats else None,
            )
        )

    async def _connect(self) -> MqttLink:
        s = self.settings
        where = f"{s.link.host}:{s.link.port}"
        while True:
            self.counters.session = await self._db(self.outbox.next_session)
            will = Will(self._state_topic, self._state(LinkState.OFFLINE, "connection lost"))
            try:
                link = await MqttLink.open(dataclasses.replace(s.link, will=will))
                await link.subscribe(self._req_topic, qos=1)
                self._hosts.clear()
                self._host_ok.clear()
                if s.wait_for_ingest:
                    await link.subscribe(topics.host_state_filter(s.wait_for_ingest), qos=0)
                self.stats_cache = await self._db(self.outbox.stats)
                async with asyncio.timeout(s.birth_timeout_s):
                    await link.publish(
                        self._state_topic,
                        self._state(LinkState.ONLINE, with_stats=True),
                        qos=1,
                        retain=True,
                    )
            except (LinkError, TimeoutError) as err:
                self.counters.connect_failures += 1
                if not self._outage_logged:
                    hint = (
                        "check the client certificate, user name and the broker's ACL"
                        if isinstance(err, LinkRefused)
                        else "check the broker is running and reachable"
                    )
                    log.warning(
                        "broker %s unavailable: %s (%s); retrying with backoff; %d envelopes "
                        "kept in the outbox",
                        where,
                        err or "no birth acknowledgement",
                        hint,
                        self.backlog,
                    )
                    self._outage_logged = True
                await self.clock.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            self.counters.connects += 1
            if self._outage_logged:
                log.info(
                    "broker %s reachable again (session %d); sending %d envelopes kept",
                    where,
                    self.counters.session,
                    self.backlog,
                )
                self._outage_logged = False
            self.link = link
            self.connected.set()
            return link

    async def _session(self, link: MqttLink) -> None:
        listener = asyncio.create_task(self._listen(link))  # owned here: cancelled and awaited
        try:
            await self._send_loop(link)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _send_loop(self, link: MqttLink) -> None:
        session = self.counters.session
        seq = 0
        after = dict.fromkeys(OutboxClass, 0)
        lost = asyncio.ensure_future(link.wait_lost())
        try:
            while True:
                if self.settings.wait_for_ingest and not self._ingest_alive():
                    await self._wait_for_ingest(link, lost)
                    continue
                self._committed.clear()
                rows = await self._db(
                    self.outbox.read, OutboxClass.EVENT, after[OutboxClass.EVENT], 64
                )
                if not rows:
                    rows = await self._db(
                        self.outbox.read,
                        OutboxClass.TELEMETRY,
                        after[OutboxClass.TELEMETRY],
                        self.settings.read_ahead,
                    )
                if not rows:
                    if self._intake_closed and not self._pending:
                        await self._wait_inflight(lost)
                        await self._flush_acks()
                        if self._drained():
                            return
                    waiter: asyncio.Future[Any] = asyncio.ensure_future(self._committed.wait())
                    await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if lost.done():
                        raise LinkLost(link.lost_reason)
                    continue
                for row in rows:
                    seq += 1
                    payload = b'%s,"link":{"session":%d,"seq":%d,"pos":%d}}' % (
                        row.payload[:-1],
                        session,
                        seq,
                        row.pos,
                    )
                    ack = await link.send(row.topic, payload, qos=self.settings.qos)
                    self._inflight += 1
                    self._idle.clear()
                    ack.add_done_callback(functools.partial(self._on_ack, row))
                    after[row.cls] = row.pos
        finally:
            lost.cancel()

    def _ingest_alive(self) -> bool:
        now = time.monotonic()
        for worker in [w for w, until in self._hosts.items() if until < now]:
            del self._hosts[worker]
        if not self._hosts:
            self._host_ok.clear()
        return bool(self._hosts)

    async def _wait_for_ingest(self, link: MqttLink, lost: asyncio.Future[str]) -> None:
        if not self.waiting_for_ingest:
            log.warning(
                "no live worker of ingest group %r: holding envelopes in the outbox",
                self.settings.wait_for_ingest,
            )
            self.waiting_for_ingest = True
        ok: asyncio.Future[Any] = asyncio.ensure_future(self._host_ok.wait())
        await asyncio.wait({ok, lost}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        ok.cancel()
        if lost.done():
            raise LinkLost(link.lost_reason)
        if self._ingest_alive():
            log.info("ingest group %r is live: sending", self.settings.wait_for_ingest)
            self.waiting_for_ingest = False

    def _host_message(self, payload: bytes, retained: bool) -> None:
        if retained:
            return  # only a live heartbeat proves a worker is subscribed now
        try:
            host = decode_host(payload)
        except ProtocolError:
            log.warning("ignored a malformed ingest heartbeat")
            return
        if host.state is LinkState.ONLINE:
            self._hosts[host.worker] = time.monotonic() + 3 * host.interval_s
            self._host_ok.set()
        else:
            self._hosts.pop(host.worker, None)

    async def _wait_inflight(self, lost: asyncio.Future[str]) -> None:
        if self._inflight:
            idle: asyncio.Future[Any] = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait({idle, lost}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()

    def _on_ack(self, row: Row, fut: asyncio.Future[None]) -> None:
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()
        err = None if fut.cancelled() else fut.exception()
        if isinstance(err, LinkLost) or fut.cancelled():
            return  # stays stored; sent again in the next session
        kind = row.topic.split("/", 5)[4] if row.topic.count("/") >= 4 else "?"
        if isinstance(err, LinkRefused):
            self.counters.refused += 1
            log.error(
                "broker refused envelope %d on %s: %s; dropped (check the broker's ACL for "
                "this gateway)",
                row.pos,
                row.topic,
                err,
            )
        elif err is None:
            self.counters.published[kind] = self.counters.published.get(kind, 0) + 1
        self._acked.append((row.cls, row.pos))
        self._have_work.set()

    # -- commands -----------------------------------------------------------------------------

    async def _listen(self, link: MqttLink) -> None:
        """Heartbeats and command requests, for as long as the link lasts. Nothing a peer sends
        ends it: the desk answers everything (see :meth:`CommandDesk.handle`), and a reply the
        broker refuses is logged, not raised."""
        try:
            async for msg in link.messages():
                if msg.topic.startswith(topics.HOST_ROOT + "/"):
                    self._host_message(msg.payload, msg.retain)
                    continue
                if msg.topic != self._req_topic:
                    continue
                reply = await self.commands.handle(msg.payload)
                try:
                    ack = await link.send(self._res_topic, cmd.encode_reply(reply), qos=1)
                except LinkLost:
                    return
                ack.add_done_callback(functools.partial(self._on_reply_ack, reply.request))
        finally:
            self.commands.refusal_log.flush()

    def _on_reply_ack(self, request: str | None, fut: asyncio.Future[None]) -> None:
        err = None if fut.cancelled() else fut.exception()
        if isinstance(err, LinkRefused):
            self.commands.refusal_log.note(
                "reply-refused",
                "the broker refused the reply to command %s on %s: %s (check its ACL)",
                request,
                self._res_topic,
                err,
            )

    async def _check_nonce(self, nonce: str, exp: int) -> None:
        await self._db(self._nonces.check_and_add, nonce, exp, self.clock.time())

    async def _audit(self, a: Audit) -> None:
        await self._db(lambda: self.outbox.audit(**dataclasses.asdict(a)))

    async def _ping(self, _req: cmd.CommandRequest) -> dict[str, Any]:
        return {"pong": True, "session": self.counters.session, "backlog": self.backlog}

    async def _outbox_stats(self, _req: cmd.CommandRequest) -> dict[str, Any]:
        self.stats_cache = await self._db(self.outbox.stats)
        return self.stats_cache.model_dump(mode="json")

    async def audit_log(self, limit: int = 100) -> list[dict[str, object]]:
        return await self._db(self.outbox.audit_log, limit)

    async def refresh_stats(self) -> OutboxStats:
        self.stats_cache = await self._db(self.outbox.stats)
        return self.stats_cache
