"""A node's MQTT connection that survives bad Wi-Fi and broker restarts.

- reconnects with capped, jittered exponential backoff (``backoff_min_ms`` .. ``backoff_max_ms``);
- subscribes again after every connect (a clean session forgets subscriptions);
- keeps QoS 1 publishes in a bounded offline queue (``queue_max``; overflow policy
  ``drop_oldest``, counted in ``stats["dropped"]``) and removes one only when the broker sent its
  PUBACK; what was in flight when the link dropped goes back to the front, in order;
- at most ``window`` publishes in flight;
- when its own queue is empty, takes more from ``feed()`` (the node's flash queue: ``[topic,
  payload, retain, True]`` or None); those are the flash queue's to keep, so a dropped link
  forgets them (``on_connect()`` then lets the feeder send them again);
- sends PINGREQ after ``keepalive_s / 2`` of silence and drops a link whose PINGRESP does not come
  within ``keepalive_s`` (a half-open TCP connection looks alive until then).

Delivery is at least once: after a reconnect the broker may see a publish twice (the gateway
drops duplicates by frame sequence number). Everything runs from :meth:`Link.poll`, called from
the node's loop; the only blocking wait is the connect, under ``connect_timeout_ms``.
The stream comes from ``open_stream()`` (see :mod:`cenode.net`): ``send(bytes)``,
``recv(timeout_ms) -> bytes`` (``b""`` when nothing came; OSError when closed), ``close()``.
"""

import random

from cenode import mqtt
from cenode.compat import sleep_ms, ticks_add, ticks_diff, ticks_ms


class Refused(Exception):
    """The broker refused the connection (credentials, ACL, client id)."""


class Link:
    def __init__(
        self,
        open_stream,
        client_id: str,
        keepalive_s: int = 30,
        user: str | None = None,
        password: str | None = None,
        will: tuple | None = None,
        queue_max: int = 32,
        window: int = 4,
        backoff_min_ms: int = 500,
        backoff_max_ms: int = 30000,
        connect_timeout_ms: int = 5000,
        on_message=None,
        feed=None,
        on_connect=None,
        ticks=ticks_ms,
        sleep=sleep_ms,
        log=None,
    ) -> None:
        self.open_stream = open_stream
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.will = will
        self.queue_max = queue_max
        self.window = window
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.on_message = on_message
        self.feed = feed
        self.on_connect = on_connect
        self.ticks = ticks
        self.sleep = sleep
        self.log = log or (lambda *a: None)
        self.subscriptions: list = []
        self.queue: list = []  # [topic, payload, retain]
        self.inflight: dict = {}  # pid -> [topic, payload, retain]
        self.stream = None
        self.reader = mqtt.Reader()
        self.pid = 0
        self.delay_ms = 0
        self.next_try = ticks()
        self.last_sent = 0
        self.ping_sent: int | None = None
        self.stats = {"connects": 0, "lost": 0, "dropped": 0, "acked": 0, "refused": 0}
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self.stream is not None

    def subscribe(self, topic_filter: str) -> None:
        if topic_filter not in self.subscriptions:
            self.subscriptions.append(topic_filter)
            if self.stream is not None:
                self._send(mqtt.subscribe_packet(self._next_pid(), [(topic_filter, 1)]))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue a QoS 1 publish; when the queue is full the oldest one is dropped (counted)."""
        if len(self.queue) >= self.queue_max:
            self.queue.pop(0)
            self.stats["dropped"] += 1
        self.queue.append([topic, payload, retain])

    @property
    def pending(self) -> int:
        """Publishes not yet acknowledged (queued or in flight)."""
        return len(self.queue) + len(self.inflight)

    def _next_pid(self) -> int:
        self.pid = self.pid % 0xFFFF + 1
        return self.pid

    def _send(self, packet: bytes) -> None:
        self.stream.send(packet)  # type: ignore[union-attr]
        self.last_sent = self.ticks()

    def _drop(self, why: str) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:
                pass
            self.stats["lost"] += 1
            self.log("link lost:", why)
        self.stream = None
        self.last_error = why
        self.reader = mqtt.Reader()
        self.ping_sent = None
        # unacknowledged publishes go back to the front, oldest first
        back = [self.inflight[p] for p in sorted(self.inflight) if len(self.inflight[p]) < 4]
        self.inflight = {}
        self.queue = back + self.queue
        while len(self.queue) > self.queue_max:
            self.queue.pop(0)
            self.stats["dropped"] += 1
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self.delay_ms = min(self.backoff_max_ms, max(self.backoff_min_ms, self.delay_ms * 2))
        jitter = self.delay_ms * random.getrandbits(8) // 512  # up to half the delay, off
        self.next_try = ticks_add(self.ticks(), self.delay_ms - jitter)

    def _connect(self) -> None:
        stream = self.open_stream()
        try:
            self._handshake(stream)
        except BaseException:
            try:
                stream.close()
            except OSError:
                pass
            raise

    def _handshake(self, stream) -> None:
        reader = mqtt.Reader()
        stream.send(
            mqtt.connect_packet(
                self.client_id, self.keepalive_s, self.user, self.password, self.will
            )
        )
        start = self.ticks()
        while True:
            left = self.connect_timeout_ms - ticks_diff(self.ticks(), start)
            if left <= 0:
                raise OSError("no CONNACK within " + str(self.connect_timeout_ms) + " ms")
            reader.feed(stream.recv(min(left, 200)))
            packets = reader.packets()
            if packets:
                break
        ptype, _flags, body = packets[0]
        if ptype != mqtt.CONNACK or len(body) != 2:
            raise mqtt.ProtocolError("expected CONNACK")
        if body[1] != 0:
            raise Refused(mqtt.REFUSALS.get(body[1], "refused (" + str(body[1]) + ")"))
        self.stream = stream
        self.reader = reader
        self.last_sent = self.ticks()
        self.stats["connects"] += 1
        self.delay_ms = 0
        self.last_error = ""
        if self.subscriptions:
            self._send(
                mqtt.subscribe_packet(self._next_pid(), [(t, 1) for t in self.subscriptions])
            )
        if self.on_connect is not None:
            self.on_connect()
        for p in packets[1:]:
            self._handle(p)

    def _handle(self, packet: tuple) -> None:
        ptype, flags, body = packet
        if ptype == mqtt.PUBACK and len(body) == 2:
            pid = body[0] << 8 | body[1]
            if self.inflight.pop(pid, None) is not None:
                self.stats["acked"] += 1
        elif ptype == mqtt.PUBLISH:
            topic, payload, qos, pid, _retain = mqtt.parse_publish(flags, body)
            if qos:
                self._send(mqtt.puback_packet(pid))
            if self.on_message is not None:
                self.on_message(topic, payload)
        elif ptype == mqtt.PINGRESP:
            self.ping_sent = None
        elif ptype == mqtt.SUBACK:
            if 0x80 in body[2:]:
                self.last_error = "subscription refused (check the broker's ACL)"
                self.log(self.last_error)
        else:
            raise mqtt.ProtocolError("unexpected packet type " + str(ptype))

    def poll(self, wait_ms: int = 0) -> None:
        """Connect when due, send what the window allows, read for up to ``wait_ms``."""
        now = self.ticks()
        if self.stream is None:
            wait = -ticks_diff(now, self.next_try)
            if wait > 0:  # not due: idle (a node's loop must not spin) but not past wait_ms
                self.sleep(min(wait, wait_ms))
                return
            try:
                self._connect()
            except Refused as err:
                self.stats["refused"] += 1
                self._drop("refused: " + str(err))
                return
            except (OSError, MemoryError, mqtt.ProtocolError) as err:
                # MemoryError: TLS buffers did not fit this time; retry after a collection
                self._drop("connect failed: " + (str(err) or type(err).__name__))
                return
        try:
            self._pump(wait_ms)
        except (OSError, mqtt.ProtocolError) as err:
            self._drop(str(err) or type(err).__name__)

    def _pump(self, wait_ms: int) -> None:
        while len(self.inflight) < self.window:
            if self.queue:
                item = self.queue.pop(0)
            else:
                item = self.feed() if self.feed is not None else None
                if item is None:
                    break
            pid = self._next_pid()
            self.inflight[pid] = item
            self._send(mqtt.publish_packet(item[0], item[1], 1, item[2], pid))
        self.reader.feed(self.stream.recv(wait_ms))  # type: ignore[union-attr]
        for p in self.reader.packets():
            self._handle(p)
        now = self.ticks()
        if self.ping_sent is not None:
            if ticks_diff(now, self.ping_sent) > self.keepalive_s * 1000:
                raise OSError("no PINGRESP within the keepalive")
        elif ticks_diff(now, self.last_sent) >= self.keepalive_s * 500:
            self._send(mqtt.PINGREQ_PACKET)
            self.ping_sent = now

    def close(self) -> None:
        """Disconnect cleanly (the broker then does not send the will)."""
        if self.stream is not None:
            try:
                self._send(mqtt.DISCONNECT_PACKET)
                self.stream.close()
            except OSError:
                pass
            self.stream = None
