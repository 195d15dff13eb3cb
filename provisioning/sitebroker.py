"""The tool on the site broker: a TLS MQTT 5 session with the technician's certificate
(``technician.<site>``), used by the self-test, ``list --refresh`` and ``ota``.

Every wait has a deadline (a monotonic clock, injectable). Frames from the nodes arrive on a
bounded queue (:data:`QUEUE_MAX`; when it is full the newest frame is dropped and counted in
:attr:`Session.dropped`: the tool reads them far faster than nodes send).

- :meth:`Session.acl_taken`: has the broker read ACL generation ``g``? A QoS 1 publish to
  :func:`provisioning.site.acl_probe_topic` is answered "not authorized" until it has.
- :meth:`Session.watch` subscribes to node channels; :meth:`Session.next` takes the next frame.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocols import nodewire
from protocols.errors import DecodeError
from provisioning.errors import ProvisionRunError

QUEUE_MAX = 4096
Clock = Callable[[], float]


@dataclass(frozen=True)
class Heard:
    """One frame from a node: where, what, whether the broker kept it (retained: sent before
    this session), and when this tool received it (the clock's time)."""

    node: str
    channel: str
    frame: nodewire.Frame
    retained: bool
    received: float


class Session:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        client_id: str,
        connect_timeout_s: float = 10,
        clock: Clock = time.monotonic,
    ) -> None:
        self.host, self.port, self.clock = host, port, clock
        self.frames: queue.Queue[Heard] = queue.Queue(QUEUE_MAX)
        self.dropped = 0
        self.undecodable: list[str] = []
        self._connected = threading.Event()
        self._refused: list[str] = []
        self._acks: dict[int, tuple[threading.Event, list[ReasonCode]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as err:
            raise ProvisionRunError(
                f"cannot load the technician's TLS files from {ca.parent}: {err}",
                hint="run the tool on the site folder made by 'cityedge provision init-site'",
            ) from err
        self.client.tls_set_context(ctx)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = self._on_suback
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ssl.SSLError) as err:
            raise ProvisionRunError(
                f"cannot reach the site broker {host}:{port}: {err}",
                hint="check that the broker runs (with broker/nodes.conf) and this machine reaches it",
            ) from err
        self.client.loop_start()
        if not self._connected.wait(connect_timeout_s) or self._refused:
            self.close()
            why = self._refused[0] if self._refused else f"no answer within {connect_timeout_s:g} s"
            raise ProvisionRunError(
                f"the site broker {host}:{port} did not accept the tool: {why}",
                hint="check the broker uses this site's CA (broker/nodes.conf) and was reloaded",
            )

    # -- paho's thread --------------------------------------------------------------------

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        if rc.is_failure:
            self._refused.append(str(rc))
        self._connected.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            _site, node, channel = nodewire.parse_node_topic(msg.topic)
            frame = nodewire.decode(bytes(msg.payload))
        except (DecodeError, ValueError) as err:
            self.undecodable = [*self.undecodable[-4:], f"{msg.topic}: {err}"]
            return
        try:
            self.frames.put_nowait(Heard(node, channel, frame, bool(msg.retain), self.clock()))
        except queue.Full:
            self.dropped += 1  # drop newest, counted

    def _slot(self, mid: int) -> tuple[threading.Event, list[ReasonCode]]:
        # made by whichever comes first, the answer (paho's thread) or the waiter; paho is never
        # called with this lock held (its own locks are taken in the other order)
        with self._lock:
            return self._acks.setdefault(mid, (threading.Event(), []))

    def _ack(self, mid: int, codes: list[ReasonCode]) -> None:
        done, got = self._slot(mid)
        got.extend(codes)
        done.set()

    def _on_ack(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: Properties) -> None:
        self._ack(mid, [rc])

    def _on_suback(
        self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: Properties
    ) -> None:
        self._ack(mid, list(rcs))

    # -- the tool's side ------------------------------------------------------------------

    def _sent(self, rc: int, what: str) -> None:
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ProvisionRunError(
                f"the connection to the site broker {self.host}:{self.port} failed while {what}",
                hint="check the broker and the network; then run the command again",
            )

    def _wait_ack(self, mid: int, until: float, what: str) -> list[ReasonCode]:
        done, got = self._slot(mid)
        try:
            if not done.wait(max(0.0, until - self.clock())):
                raise ProvisionRunError(
                    f"the site broker {self.host}:{self.port} did not answer in time while {what}",
                    hint="check the broker and the network; then run the command again",
                )
            return got
        finally:
            with self._lock:
                self._acks.pop(mid, None)

    def publish(self, topic: str, payload: bytes, timeout_s: float = 10) -> ReasonCode:
        """QoS 1; the broker's answer (MQTT 5 reason code)."""
        return self.publish_many([(topic, payload)], timeout_s)[0]

    def publish_many(
        self,
        messages: Sequence[tuple[str, bytes]],
        timeout_s: float = 30,
        window: int = 16,
        acked: Callable[[int], None] | None = None,
    ) -> list[ReasonCode]:
        """QoS 1, in order, at most ``window`` unacknowledged; ``acked(n)`` after each answer.
        Every answer within ``timeout_s`` of the previous one."""
        codes: list[ReasonCode] = []
        flight: list[tuple[int, str]] = []
        for i, (topic, payload) in enumerate(messages):
            info = self.client.publish(topic, payload, qos=1)
            self._sent(info.rc, f"sending to {topic}")
            flight.append((info.mid, topic))
            while len(flight) >= window or (i == len(messages) - 1 and flight):
                mid, t = flight.pop(0)
                codes += self._wait_ack(mid, self.clock() + timeout_s, f"sending to {t}")[:1]
                if acked is not None:
                    acked(len(codes))
        return codes

    def acl_taken(self, probe_topic: str, timeout_s: float = 10) -> bool:
        """True once the broker lets the tool publish to ``probe_topic`` (see the module)."""
        rc = self.publish(probe_topic, b"", timeout_s)
        return not rc.is_failure

    def watch(
        self, site: str, nodes: Sequence[str] | None, channels: Sequence[str], timeout_s: float = 10
    ) -> None:
        """Subscribe to ``channels`` of ``nodes`` (None: every node of the site)."""
        names = list(nodes) if nodes is not None else ["+"]
        subs = [
            (nodewire.node_topic(site, n, c) if n != "+" else f"{nodewire.ROOT}/{site}/+/{c}", 1)
            for n in names
            for c in channels
        ]
        rc, mid = self.client.subscribe(subs)
        self._sent(rc, "subscribing")
        assert mid is not None  # paho gives one whenever rc is success
        codes = self._wait_ack(mid, self.clock() + timeout_s, "subscribing")
        bad = [c for c in codes if c.is_failure]
        if bad:
            raise ProvisionRunError(
                f"the site broker refused the tool's subscription: {bad[0]}",
                hint="reload the broker so it reads the site's broker/acl",
            )

    def next(self, until: float) -> Heard | None:
        """The next frame, or None once the clock passes ``until``."""
        left = until - self.clock()
        if left <= 0:
            try:
                return self.frames.get_nowait()
            except queue.Empty:
                return None
        try:
            return self.frames.get(timeout=left)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def open_session(site: object, purpose: str, clock: Clock = time.monotonic) -> Session:
    """A session for ``site`` (a :class:`provisioning.site.Site`) as its technician."""
    from provisioning.site import Site

    assert isinstance(site, Site)
    return Session(
        site.broker_host,
        site.broker_port,
        ca=site.root / "ca.pem",
        cert=site.root / "technician.pem",
        key=site.root / "technician.key",
        client_id=f"{purpose}-{site.site}-{time.monotonic_ns() & 0xFFFFFF:x}",
        clock=clock,
    )
