"""One MQTT connection, driven from the asyncio event loop.

paho-mqtt does the protocol; this module plugs its socket into the loop (``add_reader`` /
``add_writer``, as paho's own asyncio example does) so there is no network thread, and turns
its callbacks into futures: :meth:`MqttLink.send` waits for a slot in the in-flight window and
returns a future that resolves on PUBACK (QoS 1) or once written (QoS 0).

The window is ``min(max_inflight, broker's Receive Maximum)`` — the broker may not accept more
unacknowledged QoS 1 publishes than it announced (MQTT 5.0, 3.2.2.3.3), and paho fails once
65,535 are outstanding. On disconnect every unacknowledged future fails with :class:`LinkLost`;
the caller decides what to resend (at-least-once).

Only the blocking TCP/TLS connect runs in a worker thread, under ``connect_timeout_s``.

Use as ``async with MqttLink.open(settings) as link`` (closed on the way out, within
:data:`CLOSE_TIMEOUT_S`), as aiomqtt's client is used; ``link = await MqttLink.open(settings)``
leaves :meth:`MqttLink.close` to the caller. The link owns the one task it runs (paho's
keepalive, once a second): if it fails, the link is lost and :attr:`MqttLink.crash` holds the
exception, which the ``async with`` block (and :class:`cloud_bridge.session.MqttSession`) raise.
A link does not reconnect: :class:`cloud_bridge.session.MqttSession` does, with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_bridge.aio import Opening
from cloud_bridge.errors import TransientBridgeError

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 2.0  # the longest a clean close waits for the broker to hang up

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


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


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


class MqttLink:
    """Use :meth:`open`; one instance is one connection (make a new one to reconnect)."""

    crash: BaseException | None
    """Why the link's own task failed (the link is lost then), or None."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.protocol_used: Literal["5", "3.1.1"] | None = None
        self.receive_maximum = 65535
        self.dropped_messages = 0
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._client: mqtt.Client | None = None
        self._window: asyncio.Semaphore | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: dict[int, ReasonCode | None] = {}
        self._connack: asyncio.Future[tuple[ReasonCode, Properties | None]] | None = None
        self._lost = asyncio.Event()
        self._lost_reason = "not connected"
        self._misc: asyncio.Task[None] | None = None
        self._closed = False  # torn down: a socket that opens late is closed at once
        self.crash = None
        self._messages: asyncio.Queue[Message] = asyncio.Queue(settings.message_queue)
        # received past a full queue while a SUBACK was awaited, in order, before what follows
        self._overflow: deque[Message] = deque()
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._waiting = 0
        self._reading_paused = False

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
        return self._client is not None and not self._lost.is_set()

    @property
    def lost_reason(self) -> str:
        return self._lost_reason

    async def wait_lost(self) -> str:
        """Wait until the connection is lost; returns why."""
        await self._lost.wait()
        return self._lost_reason

    def _make_client(self, version: Literal["5", "3.1.1"]) -> mqtt.Client:
        s = self.settings
        proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=proto,
            clean_session=None if version == "5" else s.clean_session,
            manual_ack=s.manual_ack,
        )
        client.suppress_exceptions = True
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            ctx = ssl.create_default_context(cafile=str(s.tls.ca_file) if s.tls.ca_file else None)
            if s.tls.cert_file:
                ctx.load_cert_chain(
                    str(s.tls.cert_file), str(s.tls.key_file) if s.tls.key_file else None
                )
            if s.tls.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            client.tls_set_context(ctx)
        if s.will is not None:
            client.will_set(s.will.topic, s.will.payload, s.will.qos, s.will.retain)
        # The window is enforced here (a semaphore sized from the broker's Receive Maximum), so
        # paho's own limit is off: with a limit paho rescans every outgoing message on each
        # PUBACK (O(window) per acknowledgement), which cost a third of the throughput.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    async def _connect(self, version: Literal["5", "3.1.1"]) -> None:
        s = self.settings
        client = self._make_client(version)
        self._client = client
        self._connack = self._loop.create_future()
        where = f"{s.host}:{s.port}"
        try:
            async with asyncio.timeout(s.connect_timeout_s):
                rc = await asyncio.to_thread(self._blocking_connect, client, version)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise LinkError(f"cannot connect to {where}: {mqtt.error_string(rc)}")
                reason, props = await self._connack
        except TimeoutError as err:
            self._teardown()
            raise LinkError(f"no CONNACK from {where} within {s.connect_timeout_s} s") from err
        except OSError as err:
            self._teardown()
            raise LinkError(f"cannot connect to {where}: {err.strerror or err}") from err
        except BaseException:  # LinkError, or a cancel: no socket or task is left behind
            self._teardown()
            raise
        if reason.is_failure:
            self._teardown()
            raise LinkRefused(f"{where} refused the connection: {reason.getName()}")
        self.protocol_used = version
        if props is not None and hasattr(props, "ReceiveMaximum"):
            self.receive_maximum = int(props.ReceiveMaximum)
        window = max(1, min(s.max_inflight, self.receive_maximum))
        # paho's own limit is off (see _make_client): the window is enforced here alone.
        self._window = asyncio.Semaphore(window)
        log.info("connected to %s (MQTT %s, in-flight window %d)", where, version, window)

    def _blocking_connect(
        self, client: mqtt.Client, version: Literal["5", "3.1.1"]
    ) -> MQTTErrorCode:
        s = self.settings
        if version != "5":
            return client.connect(s.host, s.port, s.keepalive_s)
        props = None
        if s.session_expiry_s or s.receive_maximum:
            from paho.mqtt.packettypes import PacketTypes

            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if s.session_expiry_s:
                props.SessionExpiryInterval = s.session_expiry_s
            if s.receive_maximum:
                props.ReceiveMaximum = s.receive_maximum
        return client.connect(
            s.host, s.port, s.keepalive_s, clean_start=s.clean_session, properties=props
        )

    def _teardown(self) -> None:
        self._closed = True
        client = self._client
        if client is not None:
            client.on_disconnect = None
            client.disconnect()
            if client.socket() is not None:
                # the DISCONNECT now (the broker then sends no will); paho closes the socket
                client.loop_write()
            sock = client.socket()
            if sock is not None:  # not written (a connect given up, a full send buffer)
                self._unwatch(sock)
                sock.close()
        if self._misc is not None:
            self._misc.cancel()
        self._fail_pending("link closed")

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Disconnect cleanly (no will is sent) within ``timeout_s``; unacknowledged publishes
        fail with LinkLost. Never raises: :attr:`crash` says whether the link's task failed."""
        client = self._client
        if client is not None and not self._lost.is_set():
            client.disconnect()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._lost.wait()
            except TimeoutError:
                log.debug("broker did not close within %.1f s", timeout_s)
        self._teardown()
        misc, self._misc = self._misc, None
        if misc is not None:  # cancelled by the teardown: wait for it to end, it is ours
            await asyncio.wait({misc}, timeout=timeout_s)

    # -- publishing ---------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[None]:
        """Wait for a window slot, publish, and return the future of its acknowledgement."""
        if self._window is None or self._client is None:
            raise LinkLost(self._lost_reason)
        self._waiting += 1
        try:
            await self._window.acquire()
        finally:
            self._waiting -= 1
        if self._lost.is_set():
            self._window.release()
            raise LinkLost(self._lost_reason)
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.add_done_callback(lambda _f: self._window.release() if self._window else None)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
            fut.set_exception(LinkLost(f"publish failed: {mqtt.error_string(info.rc)}"))
            return fut
        if info.mid in self._early:
            self._settle(fut, self._early.pop(info.mid))
        else:
            self._pending[info.mid] = fut
        return fut

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the acknowledgement."""
        await (await self.send(topic, payload, qos, retain))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(self, topic: str, qos: int = 1, timeout_s: float = 10.0) -> None:
        if self._client is None:
            raise LinkLost(self._lost_reason)
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkLost(f"subscribe failed: {mqtt.error_string(rc)}")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._subacks[mid] = fut
        self._resume_reading()  # the SUBACK must be read, whatever waits before it
        async with asyncio.timeout(timeout_s):
            await fut

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS 1 message received with ``manual_ack`` (in the order received)."""
        if self._client is not None and message.qos > 0 and not self._lost.is_set():
            self._client.ack(message.mid, message.qos)

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

    # -- paho callbacks (run on the loop thread, except during connect) -------------------

    def _in_loop(self, fn: Callable[[], Any]) -> None:
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        def settle() -> None:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result((reason, props))

        self._in_loop(settle)

    def _on_disconnect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        why = f"disconnected: {reason.getName() if reason else 'connection closed'}"
        self._in_loop(lambda: self._mark_lost(why))

    def _mark_lost(self, why: str) -> None:
        if self._lost.is_set():
            return
        self._lost_reason = why
        self._lost.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(LinkError(self._lost_reason))
        self._fail_pending(self._lost_reason)
        if self._window is not None:
            # wake every sender waiting for a slot so it sees the loss and raises
            for _ in range(self._waiting + 1):
                self._window.release()

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(LinkLost(why))
        for sub in self._subacks.values():
            if not sub.done():
                sub.set_exception(LinkLost(why))
        self._subacks.clear()

    @staticmethod
    def _settle(fut: asyncio.Future[None], reason: ReasonCode | None) -> None:
        if fut.done():
            return
        if reason is not None and reason.is_failure:
            fut.set_exception(LinkRefused(f"broker refused the publish: {reason.getName()}"))
        else:
            fut.set_result(None)

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode | None, _p: Any
    ) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None:
            self._early[mid] = reason  # QoS 0 is "published" inside publish(), before we know mid
        else:
            self._settle(fut, reason)

    def _on_subscribe(
        self, client: mqtt.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        fut = self._subacks.pop(mid, None)
        if not self._subacks:
            self._pause_if_behind(client)  # what came before the SUBACK, if the reader is behind
        if fut is None or fut.done():
            return
        bad = [r for r in reasons if r.is_failure]
        if bad:
            fut.set_exception(LinkRefused(f"subscription refused: {bad[0].getName()}"))
        else:
            fut.set_result(None)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid)
        if self._overflow or (self._subacks and self._messages.full()):
            # a session the broker kept sends what it queued before the SUBACK: reading must go
            # on until the SUBACK is read (the broker's Receive Maximum bounds what comes); what
            # comes after waits behind it, in order, and reading pauses once the SUBACK is in
            self._overflow.append(message)
            return
        try:
            self._messages.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped_messages += 1
            if self.settings.manual_ack and msg.qos > 0:
                # never lose an unacknowledged message: end the session's connection so the
                # broker sends again everything not acknowledged
                log.error("reader fell %d messages behind; reconnecting", self._messages.qsize())
                client.disconnect()
            return
        self._pause_if_behind(client)

    def _pause_if_behind(self, client: mqtt.Client) -> None:
        if self._subacks:
            return  # a SUBACK is awaited behind what was sent: not now (see _on_message)
        if self._overflow or self._messages.qsize() >= max(1, self._messages.maxsize // 2):
            self._pause_reading(client)

    def _pause_reading(self, client: mqtt.Client) -> None:
        """Back pressure: stop reading the socket until the reader has caught up (TCP then
        holds the broker back); the queue is never allowed to overflow."""
        sock = client.socket()
        if not self._reading_paused and sock is not None:
            self._reading_paused = True
            self._loop.remove_reader(sock)

    def _took(self, message: Message) -> Message:
        while self._overflow and not self._messages.full():
            self._messages.put_nowait(self._overflow.popleft())
        if not self._overflow and self._messages.qsize() <= self._messages.maxsize // 4:
            self._resume_reading()
        return message

    def _resume_reading(self) -> None:
        client = self._client
        if self._reading_paused:
            self._reading_paused = False
            sock = client.socket() if client is not None else None
            if sock is not None and client is not None and not self._lost.is_set():
                self._loop.add_reader(sock, client.loop_read)

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        def watch() -> None:
            if self._closed:  # the connect was given up (a timeout, a cancel) meanwhile
                sock.close()
                return
            self._loop.add_reader(sock, client.loop_read)
            self._misc = self._loop.create_task(
                self._misc_loop(client), name=f"mqtt keepalive {self.settings.client_id}"
            )
            self._misc.add_done_callback(self._misc_ended)

        self._in_loop(watch)

    def _misc_ended(self, task: asyncio.Task[None]) -> None:
        """The keepalive task ended: if it failed, the link is lost and says why (no silent
        death: the link would look up while nothing pings the broker)."""
        err = None if task.cancelled() else task.exception()
        if err is None:
            return
        err.add_note(f"in the MQTT link's keepalive task ({self.settings.client_id or 'no id'})")
        self.crash = err
        self._mark_lost(f"the link's keepalive task failed: {err!r}")
        sock = self._client.socket() if self._client is not None else None
        if sock is not None:
            self._unwatch(sock)

    def _unwatch(self, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _on_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        def unwatch() -> None:
            self._unwatch(sock)
            if self._misc is not None:
                self._misc.cancel()

        self._in_loop(unwatch)

    def _on_socket_register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.add_writer(sock, client.loop_write))

    def _on_socket_unregister_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.remove_writer(sock))

    async def _misc_loop(self, client: mqtt.Client) -> None:
        """Keepalive pings and timeouts (paho's loop_misc), once a second."""
        while client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 - a tick
            await asyncio.sleep(1.0)


async def _close_link(link: MqttLink, exc: BaseException | None) -> None:
    """The end of ``async with MqttLink.open(...)``: close, and raise what killed the link's
    task unless another exception is already on its way."""
    await link.close()
    if link.crash is not None and exc is None:
        raise link.crash
