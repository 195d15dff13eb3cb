"""One MQTT connection, driven from the asyncio event loop.

The protocol is :mod:`protocols.mqtt_wire` (sans-IO packets); this module is its transport: an
``asyncio.Protocol`` on a TCP or TLS connection made by the loop (no network thread), which
turns packets into futures: :meth:`MqttLink.send` waits for a slot in the in-flight window and
returns a future that resolves on PUBACK (QoS 1) or once handed to the transport (QoS 0).

Why not paho-mqtt, which this module drove until issue 17: measured with py-spy on a gateway
polling 100 Modbus devices flat out, paho's per-message path took about a fifth of the
process's CPU (a ``threading.Condition`` and two objects per publish, a reason code and a
properties object parsed per PUBACK, one ``recv`` per byte of each fixed header). Here a
publish is one ``bytes`` built from a cached topic prefix, the publishes of one loop iteration
go to the socket in one write, and a PUBACK is four bytes read on a fast path.

The window is ``min(max_inflight, broker's Receive Maximum)`` — the broker may not accept more
unacknowledged QoS 1 publishes than it announced (MQTT 5.0, 3.2.2.3.3). On disconnect every
unacknowledged future fails with :class:`LinkLost`; the caller decides what to resend
(at-least-once). MQTT 5 is tried first; with ``protocol: auto`` a broker that refuses it (or
hangs up) is asked again in 3.1.1.

Keepalive: a PINGREQ when nothing was sent for ``keepalive_s``; no PINGRESP within
``keepalive_s`` after it and the link is lost. Incoming QoS 1 messages are acknowledged on
arrival, or by :meth:`MqttLink.ack` with ``manual_ack``. The reader has a bounded queue: while
it is half full, the link stops reading the socket (TCP then holds the broker back).

Use as ``async with MqttLink.open(settings) as link`` (closed on the way out, within
:data:`CLOSE_TIMEOUT_S`), as aiomqtt's client is used; ``link = await MqttLink.open(settings)``
leaves :meth:`MqttLink.close` to the caller. The link owns the one task it runs (the keepalive
tick, once a second): if it fails, the link is lost and :attr:`MqttLink.crash` holds the
exception, which the ``async with`` block (and :class:`cloud_bridge.session.MqttSession`) raise.
A link does not reconnect: :class:`cloud_bridge.session.MqttSession` does, with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from cloud_bridge.aio import Opening, Slots
from cloud_bridge.errors import TransientBridgeError
from protocols import mqtt_wire as wire

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 2.0  # the longest a clean close waits for the broker to hang up
MAX_PACKET: Final = wire.DEFAULT_MAX_PACKET  # the largest packet read (announced in MQTT 5)
AckCallback = Callable[[BaseException | None], None]  # see MqttLink.send_nowait
TOPIC_CACHE: Final = 4096  # encoded topic prefixes kept (cleared when full)

Protocol = Literal["auto", "5", "3.1.1"]


class LinkError(TransientBridgeError):
    """The connection failed or was lost; retry with backoff."""


class LinkLost(LinkError):
    """The connection went down; unacknowledged publishes were not delivered (or not confirmed)."""


class LinkRefused(LinkError):
    """The broker refused the connection or a publish (credentials, ACL, client id)."""


@dataclass(frozen=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


Will = wire.WillMessage  # the message the broker publishes when the connection is lost


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    protocol: Protocol = "auto"
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    max_inflight: int = 100
    will: Will | None = None
    clean_session: bool = True  # False: the broker keeps the session (and queues QoS 1) while away
    session_expiry_s: int = 0  # MQTT 5: how long the broker keeps a session that is not clean
    message_queue: int = 10_000  # incoming messages held for the reader; more are dropped, counted
    # Subscribers that must not lose a message: acknowledge each with MqttLink.ack() once it is
    # safely stored, and ask the broker (MQTT 5 Receive Maximum) to keep few unacknowledged.
    # Whatever the broker does, the link stops reading its socket while the queue is half full
    # (except while a SUBACK is awaited: a kept session's queued messages come before it and
    # are held in order past the queue), and with manual_ack a full queue ends the connection
    # (the broker then sends again) rather than dropping a message.
    manual_ack: bool = False
    receive_maximum: int | None = None


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0  # for MqttLink.ack() when the link acknowledges by hand


class _Wire(asyncio.Protocol):
    """The loop's side of the connection: hands everything to its :class:`MqttLink`."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link._made(transport)

    def data_received(self, data: bytes) -> None:
        self.link._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._connection_lost(exc)

    def pause_writing(self) -> None:
        self.link._writable.clear()

    def resume_writing(self) -> None:
        self.link._writable.set()


def _call(on_ack: AckCallback, err: BaseException | None) -> None:
    try:
        on_ack(err)
    except Exception:  # a callback's bug must not end the link's reading
        log.exception("a publish's acknowledgement callback failed")


class MqttLink:
    """Use :meth:`open`; one instance is one connection (make a new one to reconnect)."""

    crash: BaseException | None
    """Why the link's own task failed (the link is lost then), or None."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.protocol_used: Literal["5", "3.1.1"] | None = None
        self.receive_maximum = 65535
        self.dropped_messages = 0
        self.crash = None
        self._loop = asyncio.get_running_loop()
        self._version = wire.V5
        self._reader = wire.MqttReader(wire.V5, MAX_PACKET)
        self._transport: asyncio.Transport | None = None
        self._window: Slots | None = None
        # in flight: the future :meth:`send` returned, or the callback :meth:`send_nowait` took
        self._pending: dict[int, asyncio.Future[None] | AckCallback] = {}
        self._next_id = 0
        self._connack: asyncio.Future[wire.ConnAck] | None = None
        self._lost = asyncio.Event()
        self._lost_reason = "not connected"
        self._closing = False  # we sent DISCONNECT: the end of the connection is ours
        self._misc: asyncio.Task[None] | None = None
        self._closed = False  # torn down: a connection made late is closed at once
        self._messages: asyncio.Queue[Message] = asyncio.Queue(settings.message_queue)
        # received past a full queue (while a SUBACK was awaited, or within one read), in
        # order, before what follows
        self._overflow: deque[Message] = deque()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._reading_paused = False
        self._writable = asyncio.Event()  # cleared while the transport's buffer is full
        self._writable.set()
        self._out: list[bytes] = []  # written at the end of this loop iteration, in one write
        self._flush_handle: asyncio.Handle | None = None
        self._topics: dict[str, bytes] = {}  # topic -> its encoded name (length + UTF-8)
        self._last_out = self._last_in = self._loop.time()
        self._ping_at: float | None = None  # when the unanswered PINGREQ went out
        self.keepalive_s = settings.keepalive_s  # the broker may ask for another (MQTT 5)

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: LinkSettings) -> Opening[MqttLink]:
        """Connect, trying MQTT 5 first and 3.1.1 after when ``protocol`` is ``auto``; raises
        :class:`LinkError` (:class:`LinkRefused` when the broker said no).

        ``async with MqttLink.open(settings) as link`` closes it on the way out and raises
        :attr:`crash` if the link's task failed; ``await MqttLink.open(settings)`` leaves
        :meth:`close` to the caller."""
        return Opening(lambda: cls._open(settings), _close_link)

    @classmethod
    async def _open(cls, settings: LinkSettings) -> MqttLink:
        link = cls(settings)
        versions: list[Literal["5", "3.1.1"]] = (
            ["5", "3.1.1"] if settings.protocol == "auto" else [settings.protocol]
        )
        last: LinkError | None = None
        for version in versions:
            try:
                await link._connect(version)
                return link
            except LinkRefused as err:
                if "protocol" not in str(err).lower() or version == versions[-1]:
                    raise
                last = err
            except LinkError as err:
                last = err
                if version == versions[-1]:
                    raise
            link._teardown()
            link = cls(settings)
        raise last or LinkError(
            "could not connect"
        )  # pragma: no cover - loop always returns/raises

    @property
    def connected(self) -> bool:
        return self._window is not None and not self._lost.is_set()

    @property
    def lost_reason(self) -> str:
        return self._lost_reason

    async def wait_lost(self) -> str:
        """Wait until the connection is lost; returns why."""
        await self._lost.wait()
        return self._lost_reason

    def _tls_context(self, tls: TlsSettings) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self, version: Literal["5", "3.1.1"]) -> None:
        s = self.settings
        self._version = wire.V5 if version == "5" else wire.V311
        self._reader = wire.MqttReader(self._version, MAX_PACKET)
        self._connack = self._loop.create_future()
        where = f"{s.host}:{s.port}"
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                ctx = self._tls_context(s.tls) if s.tls is not None else None
                await self._loop.create_connection(lambda: _Wire(self), s.host, s.port, ssl=ctx)
                ack = await self._connack
        except TimeoutError as err:
            self._teardown()
            if self._transport is None:
                raise LinkError(
                    f"cannot connect to {where} within {s.connect_timeout_s:g} s"
                ) from err
            raise LinkError(f"no CONNACK from {where} within {s.connect_timeout_s:g} s") from err
        except OSError as err:  # refused, unreachable, TLS: the system's words, not a tuple
            self._teardown()
            why = os.strerror(err.errno) if err.errno and not err.strerror else err.strerror
            if isinstance(err, ConnectionRefusedError):
                why = "connection refused (is the broker running, on that port?)"
            raise LinkError(f"cannot connect to {where}: {why or err}") from err
        except BaseException:  # LinkError, or a cancel: no socket or task is left behind
            self._teardown()
            raise
        if ack.reason != 0:  # success is 0 in both versions; a v3 broker may answer in v3
            self._teardown()
            name = wire.reason_name(ack.reason, wire.V5 if ack.reason >= 0x80 else wire.V311)
            raise LinkRefused(f"{where} refused the connection: {name}")
        self.protocol_used = version
        if ack.receive_maximum is not None:
            self.receive_maximum = ack.receive_maximum
        if ack.server_keep_alive is not None:  # the broker's keep alive is the one to use
            self.keepalive_s = ack.server_keep_alive
        # packet ids are 1..65535 and SUBSCRIBEs need some too
        window = max(1, min(s.max_inflight, self.receive_maximum, 65_000))
        self._window = Slots(window)
        self._misc = self._loop.create_task(self._misc_loop(), name=f"mqtt keepalive {s.client_id}")
        self._misc.add_done_callback(self._misc_ended)
        log.info("connected to %s (MQTT %s, in-flight window %d)", where, version, window)

    def _connect_packet(self) -> bytes:
        s = self.settings
        return wire.encode_connect(
            client_id=s.client_id,
            version=self._version,
            keepalive_s=s.keepalive_s,
            clean_start=s.clean_session,
            username=s.username,
            password=s.password,
            will=s.will,
            session_expiry_s=s.session_expiry_s,
            receive_maximum=s.receive_maximum,
            max_packet=MAX_PACKET,
        )

    def _teardown(self) -> None:
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self.connected:
                self._disconnect(transport)
            transport.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._misc is not None:
            self._misc.cancel()
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()  # nobody waits for it any more
        self._mark_lost(self._lost_reason if self._lost.is_set() else "link closed")

    def _disconnect(self, transport: asyncio.Transport) -> None:
        """What waits to be written, then DISCONNECT: the broker then sends no will."""
        self._flush()
        transport.write(wire.encode_disconnect())
        self._closing = True

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Disconnect cleanly (no will is sent) within ``timeout_s``; unacknowledged publishes
        fail with LinkLost. Never raises: :attr:`crash` says whether the link's task failed."""
        transport = self._transport
        if transport is not None and self.connected:
            self._disconnect(transport)
            transport.close()  # after what is buffered is written
            try:
                async with asyncio.timeout(timeout_s):
                    await self._lost.wait()
            except TimeoutError:
                log.debug("broker did not close within %.1f s", timeout_s)
                transport.abort()
        self._teardown()
        misc, self._misc = self._misc, None
        if misc is not None:  # cancelled by the teardown: wait for it to end, it is ours
            await asyncio.wait({misc}, timeout=timeout_s)

    # -- publishing ---------------------------------------------------------------------------

    async def send(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Wait for a window slot, publish, and return the future of its acknowledgement."""
        window = self._window
        if window is None or self._lost.is_set():
            raise LinkLost(self._lost_reason)
        if not self._writable.is_set():
            await self._drained()
        fut: asyncio.Future[None] = self._loop.create_future()
        if qos == 0:
            self._publish(topic, payload, 0, 0, retain)
            fut.set_result(None)
            return fut
        if not window.try_acquire():
            await window.acquire()  # LinkLost when the link is lost meanwhile (see _mark_lost)
            if self._lost.is_set():  # lost after the slot was handed over
                raise LinkLost(self._lost_reason)
        self._publish_in(window, topic, payload, qos, retain, fut)
        return fut

    def send_nowait(self, topic: str, payload: bytes, qos: int, on_ack: AckCallback) -> bool:
        """Publish at once if a window slot is free and the transport takes more; False (and
        nothing sent) otherwise, when :meth:`send` waits. ``on_ack(None)`` is called when the
        broker acknowledged it (at once for QoS 0), ``on_ack(LinkRefused)`` when it refused
        it, ``on_ack(LinkLost)`` when the link is lost first: called from the link's reading,
        without a future or a loop iteration per publish (the bridge's hot path). It must not
        raise; what it raises is logged."""
        window = self._window
        if window is None or self._lost.is_set():
            raise LinkLost(self._lost_reason)
        if not self._writable.is_set():
            return False
        if qos == 0:
            self._publish(topic, payload, 0, 0, False)
            _call(on_ack, None)
            return True
        if not window.try_acquire():
            return False
        self._publish_in(window, topic, payload, qos, False, on_ack)
        return True

    def _publish_in(
        self,
        window: Slots,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        waiter: asyncio.Future[None] | AckCallback,
    ) -> None:
        """Publish at QoS 1 in the window slot taken, ``waiter`` told of the acknowledgement;
        the slot goes back when the topic is refused (then nothing was written)."""
        pid = self._new_id()
        try:
            self._publish(topic, payload, qos, pid, retain)
        except BaseException:
            window.release()
            raise
        self._pending[pid] = waiter

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the acknowledgement."""
        await (await self.send(topic, payload, qos, retain))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _publish(self, topic: str, payload: bytes, qos: int, pid: int, retain: bool) -> None:
        name = self._topics.get(topic)
        if name is None:
            if not topic or "+" in topic or "#" in topic or "\0" in topic:
                raise ValueError(f"cannot publish to {topic!r}: not an MQTT topic name")
            if len(self._topics) >= TOPIC_CACHE:
                self._topics.clear()
            name = self._topics[topic] = wire.utf8(topic, "topic")
        size = len(name) + len(payload) + (2 if qos else 0) + (self._version == wire.V5)
        first = 0x32 if qos else 0x30
        if retain:
            first |= 1
        if size < 128:  # the remaining length in one or two bytes, as MQTT 1.5.5 writes it
            head = bytes((first, size))
        elif size < 16384:
            head = bytes((first, size & 0x7F | 0x80, size >> 7))
        else:
            head = bytes((first,)) + wire.varint(size)
        out = self._out
        out.append(head)
        out.append(name)
        if qos:
            out.append(pid.to_bytes(2, "big"))
        if self._version == wire.V5:
            out.append(b"\x00")
        out.append(payload)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _new_id(self) -> int:
        pid = self._next_id
        while True:
            pid = pid % 65535 + 1
            if pid not in self._pending and pid not in self._subacks:
                self._next_id = pid
                return pid

    def _write(self, packet: bytes) -> None:
        self._out.append(packet)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything written in this loop iteration, to the socket in one write."""
        self._flush_handle = None
        out, self._out = self._out, []
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out))
            self._last_out = self._loop.time()

    async def _drained(self) -> None:
        """Wait while the transport's buffer is over its high-water mark; LinkLost if lost."""
        ok = asyncio.ensure_future(self._writable.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({ok, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ok.cancel()
            lost.cancel()
        if self._lost.is_set():
            raise LinkLost(self._lost_reason)

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(self, topic: str, qos: int = 1, timeout_s: float = 10.0) -> None:
        if self._transport is None or self._lost.is_set():
            raise LinkLost(self._lost_reason)
        pid = self._new_id()
        packet = wire.encode_subscribe(pid, topic, qos, self._version)
        fut: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self._subacks[pid] = fut
        self._write(packet)
        self._resume_reading()  # the SUBACK must be read, whatever waits before it
        async with asyncio.timeout(timeout_s):
            reasons = await fut
        bad = [r for r in reasons if wire.is_failure(r)]
        if bad:
            raise LinkRefused(f"subscription refused: {wire.reason_name(bad[0])}")

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message received with ``manual_ack`` (in the order received)."""
        if self._transport is not None and message.qos > 0 and not self._lost.is_set():
            self._write(wire.encode_puback(message.mid))

    async def receive(self, timeout_s: float | None = None) -> Message:
        """The next message. ``TimeoutError`` when none came within ``timeout_s``;
        :class:`LinkLost` once the link is lost and every message received before is taken."""
        if not self._messages.empty():
            return self._took(self._messages.get_nowait())
        if self._lost.is_set():
            raise LinkLost(self._lost_reason)
        get = asyncio.ensure_future(self._messages.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({get, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            get.cancel()
        if get.done() and not get.cancelled():
            return self._took(get.result())
        if not self._messages.empty():
            return self._took(self._messages.get_nowait())
        if self._lost.is_set():
            raise LinkLost(self._lost_reason)
        raise TimeoutError

    def receive_nowait(self) -> Message | None:
        """The next message if one was received and not taken yet; None otherwise."""
        if self._messages.empty():
            return None
        return self._took(self._messages.get_nowait())

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages until the link is lost (then what was received before it)."""
        while True:
            try:
                yield await self.receive()
            except LinkLost:
                return

    # -- the connection's events (on the loop) --------------------------------------------------

    def _made(self, transport: asyncio.Transport) -> None:
        if self._closed:  # the connect was given up (a timeout, a cancel) meanwhile
            transport.abort()
            return
        self._transport = transport
        transport.write(self._connect_packet())
        self._last_out = self._loop.time()

    def _received(self, data: bytes) -> None:
        self._last_in = self._loop.time()
        self._reader.push(data)
        self._dispatch()

    def _dispatch(self) -> None:
        """Act on each packet read, in order, until none is complete or reading is paused:
        then the rest waits in the reader, as it would in the socket (see _pause_reading)."""
        reader = self._reader
        while not self._reading_paused and not self._lost.is_set():
            try:
                p = reader.pop()
            except wire.MqttWireError as err:
                self._broken(f"the broker sent what is not MQTT: {err}")
                return
            if p is None:
                return
            if type(p) is wire.PubAck:
                self._on_puback(p)
            elif type(p) is wire.Publish:
                self._on_message(p)
            elif type(p) is wire.SubAck:
                self._on_suback(p)
            elif type(p) is wire.PingResp:
                self._ping_at = None
            elif type(p) is wire.ConnAck:
                if self._connack is None or self._connack.done():
                    self._broken("the broker sent a second CONNACK")
                    return
                self._connack.set_result(p)
            elif type(p) is wire.Disconnect:
                name = wire.reason_name(p.reason)
                self._mark_lost(
                    f"disconnected by the broker: {name}"
                    + (f" ({p.reason_string})" if p.reason_string else "")
                )
                if self._transport is not None:
                    self._transport.close()
                return

    def _broken(self, why: str) -> None:
        """The stream cannot be trusted any more: the connection ends at once (MQTT 4.13)."""
        log.warning("%s:%d: %s", self.settings.host, self.settings.port, why)
        self._mark_lost(why)
        if self._transport is not None:
            self._transport.abort()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._closing and exc is None:
            why = "disconnected: closed by this client"
        else:
            why = f"disconnected: {exc or 'the broker closed the connection'}"
        self._mark_lost(why)
        if self._misc is not None:
            self._misc.cancel()

    def _mark_lost(self, why: str) -> None:
        if self._lost.is_set():
            return
        self._lost_reason = why
        self._lost.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(LinkError(self._lost_reason))
        self._fail_pending(self._lost_reason)
        if self._window is not None:  # every sender waiting for a slot raises
            self._window.fail(LinkLost(why))

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not isinstance(fut, asyncio.Future):
                _call(fut, LinkLost(why))
            elif not fut.done():
                fut.set_exception(LinkLost(why))
        for sub in self._subacks.values():
            if not sub.done():
                sub.set_exception(LinkLost(why))
        self._subacks.clear()

    def _on_puback(self, ack: wire.PubAck) -> None:
        fut = self._pending.pop(ack.packet_id, None)
        if fut is None:
            log.debug("a PUBACK for packet %d, which is not in flight", ack.packet_id)
            return
        if self._window is not None:
            self._window.release()
        if not isinstance(fut, asyncio.Future):  # a callback of send_nowait
            _call(fut, None if ack.reason < 0x80 else self._refused(ack.reason))
        elif fut.done():  # the caller stopped waiting
            return
        elif ack.reason >= 0x80:
            fut.set_exception(self._refused(ack.reason))
        else:
            fut.set_result(None)

    @staticmethod
    def _refused(reason: int) -> LinkRefused:
        return LinkRefused(f"broker refused the publish: {wire.reason_name(reason)}")

    def _on_suback(self, ack: wire.SubAck) -> None:
        fut = self._subacks.pop(ack.packet_id, None)
        if not self._subacks:
            self._pause_if_behind()  # what came before the SUBACK, if the reader is behind
        if fut is not None and not fut.done():
            fut.set_result(ack.reasons)

    def _on_message(self, p: wire.Publish) -> None:
        message = Message(p.topic, p.payload, p.qos, p.retain, p.packet_id)
        if p.qos and not self.settings.manual_ack:
            self._write(wire.encode_puback(p.packet_id))
        if self._overflow or (self._subacks and self._messages.full()):
            # a session the broker kept sends what it queued before the SUBACK: reading must go
            # on until the SUBACK is read (the broker's Receive Maximum bounds what comes); what
            # comes after waits behind it, in order, and reading pauses once the SUBACK is in
            self._overflow.append(message)
            return
        try:
            self._messages.put_nowait(message)
        except asyncio.QueueFull:  # not while reading pauses at half full; kept as a guard
            self.dropped_messages += 1
            if self.settings.manual_ack and p.qos > 0:
                # never lose an unacknowledged message: end the connection so the broker
                # sends again everything not acknowledged
                self._broken(f"the reader fell {self._messages.qsize()} messages behind")
            return
        self._pause_if_behind()

    def _pause_if_behind(self) -> None:
        if self._subacks:
            return  # a SUBACK is awaited behind what was sent: not now (see _on_message)
        if self._overflow or self._messages.qsize() >= max(1, self._messages.maxsize // 2):
            self._pause_reading()

    def _pause_reading(self) -> None:
        """Back pressure: stop acting on packets, and reading the socket, until the reader has
        caught up (TCP then holds the broker back); the queue is never allowed to overflow.
        What one read brought past this point waits in the reader, framed later."""
        transport = self._transport
        if not self._reading_paused and transport is not None and not transport.is_closing():
            self._reading_paused = True
            transport.pause_reading()

    def _took(self, message: Message) -> Message:
        while self._overflow and not self._messages.full():
            self._messages.put_nowait(self._overflow.popleft())
        if not self._overflow and self._messages.qsize() <= self._messages.maxsize // 4:
            self._resume_reading()
        return message

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._reader.buffered:  # what was read before the pause comes first
                self._loop.call_soon(self._dispatch)
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    # -- keepalive ------------------------------------------------------------------------------

    async def _misc_loop(self) -> None:
        """The keepalive tick, once a second, while the link lasts."""
        while self._tick():  # noqa: ASYNC110 - a tick, not a wait for an event
            await asyncio.sleep(1.0)

    def _tick(self) -> bool:
        """A PINGREQ when nothing went out or came in for ``keepalive_s``; the link is lost when
        its PINGRESP has not come ``keepalive_s`` after. False once the link is lost."""
        if self._lost.is_set():
            return False
        keepalive = self.keepalive_s
        if keepalive <= 0:
            return True
        now = self._loop.time()
        if self._ping_at is not None:
            if now - self._ping_at >= keepalive:
                self._broken(f"no PINGRESP within {keepalive} s: the broker does not answer")
                return False
        elif now - self._last_out >= keepalive or now - self._last_in >= keepalive:
            self._write(wire.PINGREQ_BYTES)
            self._ping_at = now
        return True

    def _misc_ended(self, task: asyncio.Task[None]) -> None:
        """The keepalive task ended: if it failed, the link is lost and says why (no silent
        death: the link would look up while nothing pings the broker)."""
        err = None if task.cancelled() else task.exception()
        if err is None:
            return
        err.add_note(f"in the MQTT link's keepalive task ({self.settings.client_id or 'no id'})")
        self.crash = err
        self._mark_lost(f"the link's keepalive task failed: {err!r}")
        if self._transport is not None:
            self._transport.abort()


async def _close_link(link: MqttLink, exc: BaseException | None) -> None:
    """The end of ``async with MqttLink.open(...)``: close, and raise what killed the link's
    task unless another exception is already on its way."""
    await link.close()
    if link.crash is not None and exc is None:
        raise link.crash
