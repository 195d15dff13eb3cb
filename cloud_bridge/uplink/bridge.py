"""The gateway's side of the link to the city brain: the durable outbox, the MQTT session and
the downlink commands, run as one unit.

::

    put(record) ──▶ pending ──committer (group commit, fsync)──▶ outbox (SQLite WAL)
                                                                   │ read in order, events first
    broker ◀── publish (session, seq, pos added) ◀── deliverer ◀───┘
       │  PUBACK ──▶ acked ──committer──▶ deleted from the outbox
       └─ cmd/req ──▶ CommandDesk ──▶ cmd/res

- **Stored before sent, deleted after acknowledged** (see :mod:`cloud_bridge.uplink.outbox`).
  ``group_commit_ms`` is the longest an accepted envelope waits in memory before its commit: a
  crash or power cut loses at most that much (plus one fsync), and nothing of it was published.
  ``group_commit_ms: 0`` commits as soon as anything waits (one fsync per commit).
- **Sessions.** Each connection takes a new session number from the outbox's database (committed
  before use), registers the death as its will, subscribes to its commands and publishes the
  birth; both retained on the ``state`` topic. Every envelope published carries
  ``link: {session, seq, pos}`` (see :class:`protocols.envelope.LinkInfo`), added to the
  stored JSON by :func:`protocols.envelope.with_link` so nothing is encoded twice.
- **Order.** Within a class rows go out in position order; events (alarms, availability) go
  before telemetry. After a reconnect the deliverer starts again from the oldest row still
  stored, while new envelopes keep being committed behind it.
- **Reconnect** with capped, jittered exponential backoff: the MQTT session is a
  :class:`cloud_bridge.session.MqttSession` (its will, subscriptions and birth are the bridge's;
  it says an outage once, with what the outbox keeps, and the recovery once).
- **A full disk** (see :mod:`cloud_bridge.uplink.outbox`): the outbox drops its oldest telemetry to make
  room; when none is left a commit stores nothing (:class:`~cloud_bridge.uplink.outbox.OutboxFull`) and
  the committer keeps its records, ahead of newer ones, and tries again with backoff. Pending
  records are bounded by ``max_pending``: :meth:`Bridge.put` waits beyond it, so the sink stops
  taking envelopes and its channel applies its own policy. :meth:`Bridge.health` says so.
- **Back pressure while sending.** When envelopes come faster than the broker takes them, the
  outbox would grow without bound while the link is up and everything would arrive later and
  later. So while the bridge is sending (connected, and not waiting for an ingest worker), the
  intake waits once the backlog has grown ``hold_backlog`` envelopes above its lowest since the
  link came up; it goes on as acknowledgements bring it down, at once when the link is lost
  (an outage is what the outbox is for: it takes everything then), and when no acknowledgement
  came for ``hold_stall_s`` (a broker that hangs with the connection open is an outage too, not
  a slow broker). A wait reaches the sources
  through the gateway's blocking channels: pollers miss slots, counted, rather than the uplink
  being starved of the CPU. ``hold_backlog: 0`` never waits.
- **No task dies unseen.** The committer, the deliverer, and within each session the sender and
  the listener (downlink commands, ingest heartbeats) are owned: an unexpected exception in any
  of them ends :meth:`Bridge.run` with that exception (a note names the task), after the
  clean-up below. The sink fails with it, and the gateway's supervisor logs it with its
  traceback, counts it, reports it in ``/healthz`` and starts the sink again by its restart
  policy; what was accepted and not yet stored is handed over (:meth:`Bridge.leftover`).
- **Shutdown.** :meth:`Bridge.close_intake` then waiting on :meth:`Bridge.run` flushes; a cancel
  commits what is pending and publishes the death (``shutdown``) when it can, all within
  :data:`SHUTDOWN_S`. What is not yet acknowledged stays in the outbox for the next start.
  ``async with Bridge.open(settings) as bridge`` closes the outbox on the way out.

All SQLite work runs in one worker thread (:class:`DbThread`), in order, so the event loop never
waits on a disk; the thread is a daemon, so a call stuck on a hung disk cannot keep the process
from exiting once shutdown gave up on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_bridge.aio import Clock, Opening, SystemClock, done_within
from cloud_bridge.backoff import Backoff
from cloud_bridge.link import LinkError, LinkLost, LinkRefused, LinkSettings, MqttLink, Will
from cloud_bridge.session import (
    Endpoint,
    MqttSession,
    SessionCounters,
    SessionSettings,
    Subscription,
)
from cloud_bridge.uplink.commands import Audit, CommandDesk, Handler
from cloud_bridge.uplink.outbox import (
    CommitResult,
    Outbox,
    OutboxClass,
    OutboxError,
    OutboxFull,
    OutboxSettings,
    Record,
    Row,
    SqliteNonces,
)
from protocols import commands as cmd
from protocols import envelope as env
from protocols import topics
from protocols.errors import ProtocolError, TopicError
from protocols.session import GatewayState, LinkState, OutboxStats, decode_host, encode_state

log = logging.getLogger(__name__)

T = TypeVar("T")

SHUTDOWN_S: Final = 5.0  # the longest the bridge's own clean-up takes once it is stopped
DROP_LOG_EVERY_S: Final = 10.0  # drops are logged at once, then summed at most this often


class DbThread:
    """One daemon thread that runs the calls given to :meth:`submit` in order (SQLite work off
    the event loop). A daemon, unlike a ``ThreadPoolExecutor``'s threads (joined at exit), so a
    call stuck on a hung disk cannot keep the process alive after shutdown gave up on it."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        fut: Future[T] = Future()
        if self._stopping:
            fut.set_exception(RuntimeError("the outbox thread is stopped"))
        else:
            self._calls.put((fut, fn, args))
        return fut

    def stop(self) -> None:
        """End the thread once the calls submitted so far have run."""
        if not self._stopping:
            self._stopping = True
            self._calls.put((Future(), _stop_thread, ()))

    def _serve(self) -> None:
        while True:
            fut, fn, args = self._calls.get()
            if fn is _stop_thread:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the caller, as an executor does
                fut.set_exception(err)


def _stop_thread() -> None:  # the marker DbThread.stop() queues
    return None


@dataclass(frozen=True)
class BridgeSettings:
    site: str
    gateway: str
    link: LinkSettings
    outbox_path: Path
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    group_commit_ms: int = 100
    max_pending: int = 10_000  # accepted, not yet committed; put() waits beyond this
    # while sending: put() waits once the backlog is this much above its lowest since the link
    # came up (0: never; see "Back pressure while sending")
    hold_backlog: int = 5_000
    hold_stall_s: float = 2.0  # ... unless no acknowledgement came for this long
    qos: int = 1
    read_ahead: int = 256
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    birth_timeout_s: float = 10.0
    command_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    command_max_ttl_s: int = 3600
    # Publish only while a worker of this ingest group sends live heartbeats (see
    # cloud_bridge.citybrain.ingest); None publishes whenever connected.
    wait_for_ingest: str | None = None
    # more brokers to try in turn after link.host:link.port (the nodes of one cluster)
    endpoints: tuple[Endpoint, ...] = ()


@dataclass
class BridgeCounters(SessionCounters):  # connects, connect_failures: counted by the session
    published: dict[str, int] = field(default_factory=dict)  # by kind (topic level)
    refused: int = 0  # publishes the broker refused (ACL); the row is dropped and counted
    session: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # by outbox class, this process
    held: int = 0  # times the intake waited for the broker to catch up (back pressure)
    held_s: float = 0.0  # seconds it waited in all


class Bridge:
    """Use as ``async with Bridge.open(settings) as bridge``, or :meth:`open` / :meth:`aclose`."""

    def __init__(
        self,
        settings: BridgeSettings,
        outbox: Outbox,
        db: DbThread,
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
        # told of each count as it moves, for metrics: ("published", kind), ("refused", kind)
        self.on_count: Callable[[str, str], None] | None = None
        self._kinds: dict[str, str] = {}  # topic -> kind
        self._unstored: list[Record] = []  # the clean-up's commit failed (see leftover())
        # why commits store nothing now (a full disk with no telemetry left to drop), or None
        self.holding: str | None = None
        self._dbt = db
        self._commit_backoff = Backoff(0.2, 2.0)
        self._commit_running: tuple[list[Record], Future[CommitResult]] | None = None
        self._drops_logged_at = -DROP_LOG_EVERY_S
        self._drops_unlogged: dict[tuple[str, OutboxClass], int] = {}  # by why, class
        self._pending: list[Record] = []
        self._acked: list[tuple[OutboxClass, int]] = []
        self._have_work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._in_commit = 0
        self._committed = asyncio.Event()
        # back pressure: the lowest backlog since sending began (None: not sending), and what
        # wakes a held intake (a commit moved the backlog, or sending stopped)
        self._floor: int | None = None
        self._progress = asyncio.Event()
        self._acked_at = 0.0  # clock.monotonic() of the last acknowledgement (or connect)
        self.holding_intake = False
        self._intake_closed = False
        self._committer_done = asyncio.Event()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._hosts: dict[str, float] = {}  # ingest worker -> when its heartbeat expires
        self._host_ok = asyncio.Event()
        self.waiting_for_ingest = False
        s = settings
        self._state_topic = topics.state_topic(s.site, s.gateway)
        self._req_topic = topics.command_request_topic(s.site, s.gateway)
        self._res_topic = topics.command_reply_topic(s.site, s.gateway)
        subscriptions = [Subscription(self._req_topic, qos=1)]
        if s.wait_for_ingest:
            subscriptions.append(Subscription(topics.host_state_filter(s.wait_for_ingest), qos=0))
        self.session = MqttSession(
            SessionSettings(
                link=s.link,
                subscriptions=tuple(subscriptions),
                endpoints=s.endpoints,
                reconnect_initial_s=s.reconnect_initial_s,
                reconnect_max_s=s.reconnect_max_s,
                name=f"bridge {s.site}/{s.gateway}",
            ),
            clock=clock,
            will=self._will,
            on_connect=self._birth,
            context=lambda: f"{self.backlog} envelopes kept in the outbox",
            counters=self.counters,
        )
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
    def open(
        cls,
        settings: BridgeSettings,
        clock: Clock | None = None,
        handlers: Mapping[str, Handler] | None = None,
    ) -> Opening[Bridge]:
        """Open (or create) the outbox — checking it, and setting a damaged file aside (see
        :mod:`cloud_bridge.uplink.outbox`); raises :class:`~cloud_bridge.uplink.outbox.OutboxError`.

        ``async with Bridge.open(...) as bridge`` closes it on the way out (:meth:`aclose`);
        ``await Bridge.open(...)`` leaves that to the caller."""
        return Opening(lambda: cls._open(settings, clock, handlers), _close_bridge)

    @classmethod
    async def _open(
        cls,
        settings: BridgeSettings,
        clock: Clock | None,
        handlers: Mapping[str, Handler] | None,
    ) -> Bridge:
        db = DbThread("outbox")
        clk = clock or SystemClock()
        try:
            outbox = await asyncio.wrap_future(
                db.submit(Outbox, settings.outbox_path, settings.outbox, clk.time)
            )
        except BaseException:
            db.stop()
            raise
        try:
            stats = await asyncio.wrap_future(db.submit(outbox.stats))
            nonces = await asyncio.wrap_future(db.submit(outbox.nonces))
        except BaseException:
            db.submit(outbox.close)
            db.stop()
            raise
        return cls(settings, outbox, db, clk, handlers or {}, stats, nonces)

    async def aclose(self) -> None:
        """Close the outbox, waiting at most :data:`SHUTDOWN_S` for the database thread."""
        closed = self._dbt.submit(self.outbox.close)
        self._dbt.stop()
        done, _ = await asyncio.wait({asyncio.wrap_future(closed)}, timeout=SHUTDOWN_S)
        if not done:
            log.warning(
                "the outbox %s did not close within %.0f s; its thread is left to finish",
                self.settings.outbox_path,
                SHUTDOWN_S,
            )

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._dbt.submit(fn, *args))

    # -- intake -------------------------------------------------------------------------------

    async def put(self, record: Record) -> None:
        """Accept one envelope; waits while ``max_pending`` wait for their commit (those of a
        commit under way included, so a full disk holds at most that many in memory)."""
        await self.put_many((record,))

    async def put_many(self, records: Sequence[Record]) -> None:
        """Accept envelopes in order, all or (when cancelled while waiting) none; waits as
        :meth:`put` does before taking them."""
        while len(self._pending) + self._in_commit >= self.settings.max_pending:
            self._room.clear()
            await self._room.wait()
        if self._over_backlog():
            await self._hold()
        if self._intake_closed:
            raise RuntimeError("the bridge's intake is closed")
        self._pending.extend(records)
        self._have_work.set()

    def close_intake(self) -> None:
        """No more :meth:`put`; :meth:`run` returns once everything is delivered."""
        self._intake_closed = True
        self._have_work.set()
        self._committed.set()  # wakes the deliverer to notice

    def leftover(self) -> list[Record]:
        """Accepted and not stored once :meth:`run` has ended (its last commit failed, or the
        intake added more after it), oldest first: the caller hands them to the next bridge."""
        return self._unstored + self._pending

    @property
    def backlog(self) -> int:
        """Envelopes not yet acknowledged: waiting for their commit or in the outbox."""
        return len(self._pending) + self.outbox.depth

    def _sending(self) -> bool:
        return self.connected.is_set() and not self.waiting_for_ingest

    def _over_backlog(self) -> bool:
        """Back pressure (see the module docstring): True while the intake should wait."""
        limit = self.settings.hold_backlog
        if limit <= 0 or not self._sending():
            self._floor = None
            return False
        backlog = self.backlog
        if self._floor is None or backlog < self._floor:
            self._floor = backlog
        if backlog <= self._floor + limit:
            return False
        if self.clock.monotonic() - self._acked_at >= self.settings.hold_stall_s:
            self._floor = None  # the broker takes nothing: an outage; measured afresh after
            return False
        return True

    async def _hold(self) -> None:
        """Wait until the broker has brought the backlog down, or sending stopped."""
        self.holding_intake = True
        self.counters.held += 1
        if self.counters.held == 1 or self.counters.held % 100 == 0:
            log.info(
                "bridge %s/%s: envelopes come faster than the broker takes them; the sources "
                "wait (backlog %d; held %d times)",
                self.settings.site,
                self.settings.gateway,
                self.backlog,
                self.counters.held,
            )
        start = self.clock.monotonic()
        try:
            while self._over_backlog():
                self._progress.clear()
                moved = asyncio.ensure_future(self._progress.wait())
                try:
                    await done_within(self.clock, moved, self.settings.hold_stall_s)
                finally:
                    moved.cancel()
        finally:
            self.holding_intake = False
            self.counters.held_s += self.clock.monotonic() - start

    def _moved(self) -> None:
        """The backlog moved or sending stopped: a held intake looks again."""
        self._progress.set()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Commit and deliver until the intake is closed and everything is acknowledged.

        An unexpected exception in any of the bridge's tasks ends it (after the clean-up), with
        a note naming the task."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_named("committer", self._committer()), name="bridge committer")
                tg.create_task(_named("deliverer", self._deliverer()), name="bridge deliverer")
        finally:
            await self._shutdown()

    def health(self) -> list[str]:
        """Why the bridge works only in part now (empty: it does not), for ``/healthz``."""
        held = (
            [
                f"the broker takes envelopes slower than the sources make them: they wait "
                f"(backlog {self.backlog}; see cityedge_poll_slots_missed)"
            ]
            if self.holding_intake
            else []
        )
        full = self.outbox.disk_full
        if full is None:
            return held
        where = f"{self.settings.outbox_path}, {full.free_bytes} bytes free"
        if self.holding is not None:
            return [
                f"outbox disk full ({where}): no telemetry left to drop; holding "
                f"{len(self._pending)} envelopes in memory and taking no more"
            ]
        return [
            f"outbox disk full ({where}): dropping the oldest telemetry to make room "
            f"({full.dropped} dropped since it filled)",
            *held,
        ]

    def notices(self) -> list[str]:
        """What happened that people should know of, though all works now (for ``/healthz``)."""
        return [
            f"outbox {self.settings.outbox_path} was damaged ({a.reason}) and set aside as "
            f"{a.file} at {a.time.isoformat()}: what it held was not sent"
            for a in self.stats_cache.set_aside or []
        ]

    async def _shutdown(self) -> None:
        """Store what waits, say goodbye, close: each step bounded, all within SHUTDOWN_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_S
        running, self._commit_running = self._commit_running, None
        if running is not None:  # the committer was stopped while its commit ran
            records, fut = running
            if not await self._settled(fut, deadline):
                self._pending[:0] = records
        if self._pending or self._acked:
            records, acked = self._pending, self._acked
            self._pending, self._acked = [], []
            if not await self._settled(
                self._dbt.submit(self.outbox.commit, records, acked), deadline
            ):
                self._unstored = records
                log.warning(
                    "bridge %s/%s: %d envelopes accepted but not stored at the stop; handed on",
                    self.settings.site,
                    self.settings.gateway,
                    len(records),
                )
        link = self.link
        self.link = None
        if link is not None:
            await self._goodbye(link, max(0.0, min(2.0, deadline - loop.time())))
        await self.session.aclose(max(0.1, min(2.0, deadline - loop.time())), raise_crash=False)
        if self.outbox.depth:
            log.info(
                "bridge %s/%s: %d envelopes stay in the outbox %s for the next start",
                self.settings.site,
                self.settings.gateway,
                self.outbox.depth,
                self.settings.outbox_path,
            )

    async def _settled(self, fut: Future[CommitResult], deadline: float) -> bool:
        """Wait for a commit until ``deadline``; True when it stored its records."""
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({asyncio.wrap_future(fut)}, timeout=timeout)
        if not done:
            log.warning("a commit to the outbox did not finish within %.0f s", SHUTDOWN_S)
            return False
        if fut.cancelled() or fut.exception() is not None:
            return False
        self._committed_ok(fut.result())
        return True

    async def _goodbye(self, link: MqttLink, timeout_s: float = 2.0) -> None:
        """Publish the death ourselves: a clean disconnect does not fire the will."""
        if not link.connected:
            return
        try:
            async with asyncio.timeout(timeout_s):
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
            if (self._pending or self._acked) and not await self._commit():
                await self.clock.sleep(self._commit_backoff.next_delay())
                self._have_work.set()
                continue
            if self._intake_closed and not self._pending and self._drained():
                return

    async def _commit(self) -> bool:
        """Commit what waits. False when the disk is full and nothing could be stored: the
        records stay pending, ahead of those that came since, and are tried again."""
        records, acked = self._pending, self._acked
        self._pending, self._acked = [], []
        fut = self._dbt.submit(self.outbox.commit, records, acked)
        self._commit_running = (records, fut)
        self._in_commit = len(records)
        try:
            result = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            raise  # the commit may still run: _shutdown settles it
        except OutboxFull as err:
            self._commit_running = None
            self._pending[:0] = records
            if not err.acked_done:
                self._acked[:0] = acked
            if self.holding is None:
                log.error(
                    "%s: holding %d envelopes in memory and taking no more until it has room",
                    err,
                    len(self._pending),
                )
            self.holding = str(err)
            return False
        except OutboxError:
            self._commit_running = None
            self._pending[:0] = records  # handed to the next bridge (leftover) by _shutdown
            raise
        finally:
            self._in_commit = 0
        self._commit_running = None
        self._committed_ok(result)
        return True

    def _committed_ok(self, result: CommitResult) -> None:
        self._commit_backoff.reset()
        self._room.set()
        if self.holding is not None:
            log.warning("the outbox takes envelopes again")
            self.holding = None
        why = (
            "its disk is full"
            if self.outbox.disk_full is not None
            else f"over its budget of {self.settings.outbox.budget_bytes} bytes"
        )
        for c, n in result.dropped.items():
            if n:
                self.counters.dropped[c.value] = self.counters.dropped.get(c.value, 0) + n
                self._drops_unlogged[why, c] = self._drops_unlogged.get((why, c), 0) + n
        now = self.clock.monotonic()
        if self._drops_unlogged and now - self._drops_logged_at >= DROP_LOG_EVERY_S:
            for (reason, c), n in self._drops_unlogged.items():
                log.warning(
                    "outbox %s: dropped %d %s envelopes (oldest first); %d dropped in all",
                    reason,
                    n,
                    c.value,
                    self.outbox.dropped[c],
                )
            self._drops_unlogged.clear()
            self._drops_logged_at = now
        if self.on_commit is not None:
            self.on_commit(result)
        self._committed.set()
        self._moved()

    def _drained(self) -> bool:
        return self.outbox.depth == 0 and not self._acked and self._inflight == 0

    async def _deliverer(self) -> None:
        while not (self._intake_closed and not self._pending and self._drained()):
            link = await self.session.connect()  # backs off while the broker is away
            if link is None:
                return  # the session was closed: the bridge is stopping
            self.link = link
            self._acked_at = self.clock.monotonic()
            self.connected.set()
            try:
                await self._session(link)
                await self._goodbye(link)  # drained after close_intake(): a clean stop
            except LinkLost:
                pass  # the session says so (once an outage); the rows stay stored
            finally:
                self.connected.clear()
                self._moved()
                self.link = None
                try:
                    await self.session.end()  # raises what killed the link's task, if anything
                finally:
                    # in-flight rows failed with LinkLost and stay stored; flush acks, forget
                    # reservations, and start again from the oldest row on the next session
                    await self._flush_acks()
                    await self._db(self.outbox.release)
        self._have_work.set()  # the committer may be waiting: it is done too

    async def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            try:
                await self._db(self.outbox.commit, [], acked)
            except OutboxFull:
                self._acked[:0] = acked  # the committer tries again
            self._moved()

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

    async def _will(self) -> Will:
        """Before each connection: a new session number (committed before use), and the death
        that says so as the will."""
        self.counters.session = await self._db(self.outbox.next_session)
        self._hosts.clear()  # heartbeats count from this connection on
        self._host_ok.clear()
        return Will(self._state_topic, self._state(LinkState.OFFLINE, "connection lost"))

    async def _birth(self, link: MqttLink) -> None:
        """Once subscribed: the birth, retained, with what the outbox holds. Unacknowledged
        within ``birth_timeout_s``, the connection counts as failed."""
        self.stats_cache = await self._db(self.outbox.stats)
        birth = self._state(LinkState.ONLINE, with_stats=True)
        try:
            async with asyncio.timeout(self.settings.birth_timeout_s):
                await link.publish(self._state_topic, birth, qos=1, retain=True)
        except TimeoutError as err:
            raise LinkError(
                f"no acknowledgement of the birth within {self.settings.birth_timeout_s:g} s"
            ) from err

    async def _session(self, link: MqttLink) -> None:
        """Send until drained or the link is lost, with the listener beside the sender: either
        one failing ends the session with its exception (nothing of it passes unseen)."""
        listener = asyncio.create_task(self._listen(link), name="bridge listener")
        sender = asyncio.create_task(self._send_loop(link), name="bridge sender")
        try:
            while not sender.done():
                await asyncio.wait({listener, sender}, return_when=asyncio.FIRST_COMPLETED)
                if listener.done() and not sender.done():
                    crash = None if listener.cancelled() else listener.exception()
                    if crash is None and link.connected:
                        crash = RuntimeError("the listener ended while the link was up")
                    if crash is not None:
                        crash.add_note(
                            "in the bridge's listener (downlink commands, ingest heartbeats)"
                        )
                        raise crash
                    await sender  # the link is lost: the sender notices it
            sender.result()
        finally:
            for task in (listener, sender):
                task.cancel()
            await asyncio.wait({listener, sender}, timeout=SHUTDOWN_S)

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
                qos = self.settings.qos
                for row in rows:
                    seq += 1
                    payload = env.with_link(row.payload, session, seq, row.pos)
                    self._inflight += 1
                    self._idle.clear()
                    try:
                        done = functools.partial(self._acked_row, row)
                        if not link.send_nowait(row.topic, payload, qos, done):
                            # no window slot, or the socket is behind: wait for it
                            ack = await link.send(row.topic, payload, qos=qos)
                            ack.add_done_callback(functools.partial(self._on_ack, row))
                    except BaseException:
                        self._acked_row(row, asyncio.CancelledError())  # not sent
                        raise
                    after[row.cls] = row.pos
        finally:
            lost.cancel()

    def _ingest_alive(self) -> bool:
        now = self.clock.monotonic()
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
            self._moved()
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
            self._hosts[host.worker] = self.clock.monotonic() + 3 * host.interval_s
            self._host_ok.set()
        else:
            self._hosts.pop(host.worker, None)

    async def _wait_inflight(self, lost: asyncio.Future[str]) -> None:
        if self._inflight:
            idle: asyncio.Future[Any] = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait({idle, lost}, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()

    def _on_ack(self, row: Row, fut: asyncio.Future[None]) -> None:
        self._acked_row(row, asyncio.CancelledError() if fut.cancelled() else fut.exception())

    def _acked_row(self, row: Row, err: BaseException | None) -> None:
        """The broker acknowledged ``row`` (``err`` None), refused it (LinkRefused), or it was
        not (LinkLost, cancelled): then it stays stored and is sent again in the next session."""
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()
        if isinstance(err, LinkLost | asyncio.CancelledError):
            return
        self._acked_at = self.clock.monotonic()
        kind = self._kinds.get(row.topic)
        if kind is None:  # each topic's kind is read from it once
            if len(self._kinds) >= 65_536:
                self._kinds.clear()
            try:
                kind = topics.parse(row.topic).kind
            except TopicError:
                kind = "?"
            self._kinds[row.topic] = kind
        if self.on_count is not None:
            self.on_count("refused" if isinstance(err, LinkRefused) else "published", kind)
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
                if topics.is_host_state(msg.topic):
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


async def _close_bridge(bridge: Bridge, _exc: BaseException | None) -> None:
    await bridge.aclose()


async def _named(task: str, work: Awaitable[None]) -> None:
    """Run one of the bridge's tasks; an unexpected exception gets a note naming the task."""
    try:
        await work
    except Exception as err:
        if not isinstance(err, LinkError):
            err.add_note(f"in the bridge's {task}")
        raise
