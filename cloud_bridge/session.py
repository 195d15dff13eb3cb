"""One MQTT session that outlives its connections: connect, subscribe, back off, say it once.

The gateway's bridge, the node source, the city brain's ingest and the demo's live view each
stay with a broker for as long as they run; :class:`MqttSession` is the loop around
:class:`~cloud_bridge.link.MqttLink` they share, used as aiomqtt's client is::

    async with MqttSession(settings, stop=stop) as session:
        async for msg in session.messages():  # across reconnects, until stop
            ...

    async with MqttSession(settings, will=..., on_connect=...) as session:
        async for link in session.links():  # one connected, subscribed link at a time
            await work(link)  # until it is lost, or the work is done

- **Connect** with a deadline: ``link.connect_timeout_s`` for TCP/TLS and the CONNACK, and
  again for each SUBACK. ``will`` makes the will afresh for each attempt (the bridge's carries
  its new session number); ``on_connect`` runs once subscribed (the bridge's birth). A
  :class:`~cloud_bridge.link.LinkError` or ``TimeoutError`` from any of it is a failed attempt.
- **Subscribe** to ``subscriptions`` on every connection (a broker may have lost them).
- **Back off** after a failed attempt: capped, jittered and exponential
  (:class:`~cloud_bridge.backoff.Backoff`), on the injected clock; reset once connected. After a
  loss the first attempt is at once.
- **Endpoints.** ``endpoints`` names more brokers (the nodes of one cluster); after a failed
  attempt or a loss the next is tried, in turn. Every attempt is a new link (one
  connection each), so nothing of a lost connection is carried into the next.
- **Said once.** The first failed attempt or loss of an outage is logged as a warning with a
  hint; the first connection after it logs "reachable again"; nothing in between.
  :attr:`MqttSession.unavailable` says why while it lasts (a screen shows it: ``logger=None``).
- **Close** within ``close_timeout_s`` (a clean DISCONNECT: no will): on leaving the ``async
  with`` block, on :meth:`MqttSession.end`, and before each reconnect.
- **Nothing dies unseen.** When the link's own task fails (see :mod:`cloud_bridge.link`), the
  session does not reconnect: :meth:`~MqttSession.links`, :meth:`~MqttSession.messages` and
  :meth:`~MqttSession.connect` raise that exception.
- **Stop.** Once ``stop`` is set, a connect, a back-off or a wait for the next message ends at
  once and the iterators finish. Without ``stop``, cancel the task (or ``break``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from cloud_bridge.aio import Clock, SystemClock, unless_stopped
from cloud_bridge.backoff import Backoff
from cloud_bridge.link import (
    CLOSE_TIMEOUT_S,
    LinkError,
    LinkLost,
    LinkRefused,
    LinkSettings,
    Message,
    MqttLink,
    Will,
)

log = logging.getLogger(__name__)

HINT_REFUSED = "check the client certificate, user name and the broker's ACL"
HINT_UNREACHABLE = "check the broker is running and reachable"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Subscription:
    filter: str
    qos: int = 1


@dataclass(frozen=True)
class SessionSettings:
    link: LinkSettings  # its host and port are the first endpoint
    subscriptions: tuple[Subscription, ...] = ()
    # more brokers to try in turn, after link.host:link.port (the nodes of one cluster)
    endpoints: tuple[Endpoint, ...] = ()
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    close_timeout_s: float = CLOSE_TIMEOUT_S
    name: str = "mqtt"  # who holds the session, at the start of its log lines

    @property
    def all_endpoints(self) -> tuple[Endpoint, ...]:
        return (Endpoint(self.link.host, self.link.port), *self.endpoints)


@dataclass
class SessionCounters:
    connects: int = 0
    connect_failures: int = 0


class MqttSession:
    """A session with a broker across connections (see the module's docstring)."""

    link: MqttLink | None
    """The connection now, when there is one."""
    unavailable: str | None
    """Why the broker cannot be used, while it cannot (None: connected, or not tried yet)."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        clock: Clock | None = None,
        stop: asyncio.Event | None = None,
        will: Callable[[], Awaitable[Will]] | None = None,
        on_connect: Callable[[MqttLink], Awaitable[None]] | None = None,
        context: Callable[[], str] | None = None,
        counters: SessionCounters | None = None,
        logger: logging.Logger | None = log,
    ) -> None:
        """``context`` adds to each outage and recovery line (the bridge: what its outbox
        keeps); ``counters`` counts connects and failed attempts (the caller's, when it has
        some); ``logger=None`` logs nothing (the live view shows :attr:`unavailable`)."""
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.counters = counters if counters is not None else SessionCounters()
        self.link = None
        self.unavailable = None
        self._stop = stop
        self._will = will
        self._on_connect = on_connect
        self._context = context
        self._log = logger
        self._backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        self._endpoints = settings.all_endpoints
        self._at = 0  # index of the endpoint tried next
        self._outage_said = False
        self._closed = False

    async def __aenter__(self) -> MqttSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(raise_crash=exc is None)

    @property
    def endpoint(self) -> Endpoint:
        """The broker connected to, or tried next."""
        return self._endpoints[self._at]

    def links(self) -> _Links:
        """Connected, subscribed links, one after the other: asking for the next ends the one
        before (a loss is said once) and reconnects with backoff; ends once stopped."""
        return _Links(self)

    def messages(self) -> _Messages:
        """Every message, across reconnects; ends once stopped."""
        return _Messages(self)

    def _stopped(self) -> bool:
        return self._closed or (self._stop is not None and self._stop.is_set())

    async def connect(self) -> MqttLink | None:
        """End the current connection, then connect again, trying until it works (with
        backoff) or the session is stopped (None)."""
        await self.end()
        while not self._stopped():
            where = self.endpoint
            try:
                link = await unless_stopped(self._attempt(where), self._stop)
            except (LinkError, TimeoutError) as err:
                self.counters.connect_failures += 1
                hint = HINT_REFUSED if isinstance(err, LinkRefused) else HINT_UNREACHABLE
                self._outage(
                    f"broker {where} unavailable: {err or 'timed out'}",
                    f"({hint}); retrying with backoff",
                )
                self._next_endpoint()
                await unless_stopped(self.clock.sleep(self._backoff.next_delay()), self._stop)
                continue
            if link is None:
                break
            self._backoff.reset()
            self.counters.connects += 1
            self.link = link
            if self._stopped():  # while it connected
                await self.end()
                break
            if self._outage_said:
                self._outage_said = False
                self._say(logging.INFO, f"broker {where} reachable again")
            self.unavailable = None
            if self.settings.subscriptions:
                subscribed = ", ".join(sub.filter for sub in self.settings.subscriptions)
                self._say(logging.INFO, f"subscribed to {subscribed} on {where}", context=False)
            return link
        return None

    async def _attempt(self, where: Endpoint) -> MqttLink:
        s = self.settings
        link_settings = dataclasses.replace(s.link, host=where.host, port=where.port)
        if self._will is not None:
            link_settings = dataclasses.replace(link_settings, will=await self._will())
        link = await MqttLink.open(link_settings)
        try:
            for sub in s.subscriptions:
                await link.subscribe(sub.filter, sub.qos, timeout_s=s.link.connect_timeout_s)
            if self._on_connect is not None:
                await self._on_connect(link)
        except BaseException:
            await link.close(s.close_timeout_s)
            raise
        return link

    async def end(self, timeout_s: float | None = None) -> None:
        """End the current connection, cleanly within ``close_timeout_s`` (or ``timeout_s``).
        Raises what killed the link's task, if something did."""
        link, self.link = self.link, None
        if link is None:
            return
        if not link.connected and link.crash is None:
            self._outage(f"lost the broker {self.endpoint} ({link.lost_reason})", "reconnecting")
            self._next_endpoint()
        await link.close(self.settings.close_timeout_s if timeout_s is None else timeout_s)
        if link.crash is not None:
            raise link.crash

    async def aclose(self, timeout_s: float | None = None, *, raise_crash: bool = True) -> None:
        """Stop: end the current connection (see :meth:`end`) and connect no more."""
        self._closed = True
        try:
            await self.end(timeout_s)
        except Exception:
            if raise_crash:
                raise

    def _next_endpoint(self) -> None:
        self._at = (self._at + 1) % len(self._endpoints)

    def _outage(self, what: str, then: str) -> None:
        self.unavailable = what
        if not self._outage_said:
            self._outage_said = True
            self._say(logging.WARNING, f"{what} {then}")

    def _say(self, level: int, text: str, *, context: bool = True) -> None:
        if self._log is None:
            return
        extra = self._context() if context and self._context is not None else ""
        self._log.log(level, "%s: %s%s", self.settings.name, text, f"; {extra}" if extra else "")


class _Links:
    def __init__(self, session: MqttSession) -> None:
        self._session = session

    def __aiter__(self) -> _Links:
        return self

    async def __anext__(self) -> MqttLink:
        link = await self._session.connect()
        if link is None:
            raise StopAsyncIteration
        return link


class _Messages:
    """The messages of the session's link now; when it is lost, of the next one."""

    def __init__(self, session: MqttSession) -> None:
        self._session = session

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> Message:
        s = self._session
        while True:
            link = s.link
            if link is not None:
                msg = link.receive_nowait()  # most messages are waiting already: no task
                if msg is not None:
                    return msg
                try:
                    msg = await unless_stopped(link.receive(), s._stop)
                except LinkLost:
                    pass  # on to the next connection
                else:
                    if msg is None:  # stopped
                        raise StopAsyncIteration
                    return msg
            if await s.connect() is None:
                raise StopAsyncIteration
