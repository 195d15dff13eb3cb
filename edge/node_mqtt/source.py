"""Source ``mqtt``: MicroPython sensor nodes on the site's local broker.

Subscribes to the node topics of its site (``cityedge/node/v1/{site}/+/up|status|res``, see
:mod:`protocols.nodewire`) and turns reading frames into :class:`~edge.readings.ReadingBatch`,
so node data flows through the same apps and sinks as Modbus devices. Per node:

- only configured nodes are accepted (the broker's ACL already keeps a node to its own topics);
  others are counted and logged once;
- a queued report (from the node's flash queue) is named by (node, boot, seq): one seen before
  is dropped (the last :data:`REMEMBERED_PER_NODE` per node are remembered). Once its telemetry
  is in the gateway's durable outbox (the batch's receipt), the source acknowledges it on the
  node's ``cmd`` topic (an ack frame, by seq); only then does the node delete it from flash. A
  repeat of a stored report is acknowledged again (the first acknowledgement was lost);
- any other frame that repeats one of the last ``dedupe_window`` frames byte for byte is
  dropped (a node resends unacknowledged frames after a reconnect: at-least-once);
- the frame's time is used when the node's clock is set and within ``max_clock_skew_s`` of the
  gateway's; otherwise the arrival time;
- status frames drive availability: the will (``offline``) makes the node unavailable once, any
  later frame recovers it; OTA results and rollbacks are logged with their reason.

With ``commands`` configured, apps write ``relay_on`` of gate-relay nodes (:class:`Writer`): a
command signed with the gateway's command key, the node's reply by nonce, then the relay read
back from the node's next report (:mod:`edge.node_mqtt.commands`).

The connection is a :class:`cloud_bridge.session.MqttSession`: it reconnects with capped,
jittered backoff, subscribes again each time and says an outage once. The MQTT session is
persistent (``session_expiry_s``): frames that nodes publish while the gateway is away are queued
by the broker, not dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import replace

from cloud_bridge.link import LinkError, Message
from cloud_bridge.session import MqttSession, SessionSettings, Subscription
from edge.actuators import ActuationError, Writer
from edge.errors import DeviceError
from edge.mqtt_sink.sink import endpoints, link_settings
from edge.node_mqtt.commands import Pending, load_command_key, within
from edge.node_mqtt.config import WRITABLE, MqttSourceConfig
from edge.plugin import Plugin, SourceContext, TracksDevices
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env
from protocols import nodewire, signed
from protocols.errors import DecodeError, TopicError
from protocols.modbus import Value

log = logging.getLogger(__name__)

_READ = ("up", "status", "res")  # the node channels this source subscribes to
MAX_UNKNOWN_LOGGED = 256  # unknown node names remembered (each logged once); more are counted
REMEMBERED_PER_NODE = 4096  # queued reports remembered per node by (boot, seq), oldest forgotten
ACK_TIMEOUT_S = 5.0  # for the broker's PUBACK of an acknowledgement; the node sends again else


class _Node:
    def __init__(self, name: str, kind: str, window: int) -> None:
        self.name = name
        self.kind = kind
        self.writing = asyncio.Lock()  # one command in flight: its read-back is unambiguous
        self.pending: Pending | None = None
        self.recent: deque[bytes] = deque(maxlen=window) if window else deque(maxlen=1)
        self.window = window
        self.health = "unknown"
        self.version: tuple[int, int, int] | None = None
        self.bad_frames = 0
        # queued reports by (boot, seq): True once stored in the outbox, False until then
        self.reports: OrderedDict[tuple[int, int], bool] = OrderedDict()


class MqttSource(Plugin, Writer, TracksDevices):
    def __init__(self, config: MqttSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.site = config.node_site or ctx.site
        # a persistent session: node frames published while the gateway is away (a gateway
        # restart, or nodes reconnecting to a restarted broker before the gateway does) wait
        # at the broker instead of being dropped for want of a subscriber
        self.settings = SessionSettings(
            link=replace(
                link_settings(config, f"{ctx.site}-{ctx.gateway}-nodes"),
                clean_session=config.session_expiry_s == 0,
                session_expiry_s=config.session_expiry_s,
            ),
            subscriptions=tuple(Subscription(f, qos=1) for f in self.filters()),
            endpoints=endpoints(config),
            reconnect_initial_s=config.reconnect_initial_s,
            reconnect_max_s=config.reconnect_max_s,
            name=f"source {self.name}",
        )
        self.nodes = {n.name: _Node(n.name, n.kind, config.dedupe_window) for n in config.nodes}
        self.command_key = (
            load_command_key(config.commands, ctx.gateway, ctx.clock.time())
            if config.commands is not None
            else None
        )
        self._session: MqttSession | None = None
        self.unknown: set[str] = set()
        self.duplicates = 0
        # stored reports to acknowledge: (node, boot) -> seqs; sent by _send_acks
        self._acks: dict[tuple[str, int], list[int]] = {}
        self._ack_wake = asyncio.Event()

    def device_health(self) -> dict[str, str]:
        return {n.name: n.health for n in self.nodes.values()}

    def filters(self) -> list[str]:
        return [nodewire.site_filter(self.site, channel) for channel in _READ]

    async def run(self) -> None:
        async with (
            MqttSession(self.settings, clock=self.ctx.clock) as session,
            asyncio.TaskGroup() as tg,
        ):
            self._session = session
            try:
                acks = tg.create_task(self._send_acks(session))
                async for msg in session.messages():
                    await self.handle(msg)
                acks.cancel()
            finally:
                self._session = None

    async def handle(self, msg: Message) -> None:
        """One message from the broker (public for tests and benchmarks)."""
        try:
            site, name, channel = nodewire.parse_node_topic(msg.topic)
        except TopicError:
            return
        if site != self.site or channel not in _READ:
            return  # not subscribed to; a broker bridge may still deliver it
        node = self.nodes.get(name)
        if node is None:
            if name not in self.unknown and len(self.unknown) < MAX_UNKNOWN_LOGGED:
                self.unknown.add(name)
                log.warning(
                    "source %s: messages from node %r, which is not configured; ignored "
                    "(add it to the source's nodes)",
                    self.name,
                    name,
                )
            self.ctx.metrics.poll_errors.labels(self.name, "unknown", "unknown-node").inc()
            return
        if not msg.payload and channel == "status":
            return  # a cleared retained status
        try:
            frame = nodewire.decode(msg.payload)
        except DecodeError as err:
            node.bad_frames += 1
            self.ctx.metrics.poll_errors.labels(self.name, name, "decode").inc()
            if node.bad_frames == 1 or node.bad_frames % 100 == 0:
                log.warning(
                    "node %s: bad frame on %s (%d so far): %s", name, channel, node.bad_frames, err
                )
            return
        key: tuple[int, int] | None = None
        if isinstance(frame, nodewire.ReadingsFrame) and frame.boot is not None:
            key = (frame.boot, frame.seq)
            stored = node.reports.get(key)
            if stored is not None:
                self.duplicates += 1
                if stored:
                    self._ack(node.name, key)
                return
            node.reports[key] = False
            if len(node.reports) > REMEMBERED_PER_NODE:
                node.reports.popitem(last=False)
        elif node.window:
            if msg.payload in node.recent:
                self.duplicates += 1
                return
            node.recent.append(msg.payload)
        now = self.ctx.clock.time()
        if isinstance(frame, nodewire.StatusFrame):
            await self._status(node, frame, now)
            return
        await self._alive(node, now, "reports again")
        if isinstance(frame, nodewire.ReadingsFrame):
            at = float(frame.time)
            if not frame.time or abs(at - now) > self.config.max_clock_skew_s:
                at = now
            readings = tuple(Reading(r.point, r.value, r.unit) for r in frame.readings)
            self.ctx.metrics.readings.labels(self.name, name).inc(len(readings))
            receipt = None if key is None else self._receipt(node, key)
            if node.pending is not None:
                node.pending.reported(frame)
            await self.ctx.readings.put(ReadingBatch(self.name, name, at, readings, key, receipt))
        elif isinstance(frame, nodewire.ReplyFrame):
            log.info(
                "node %s: command %s %s: %s", name, frame.nonce, frame.result.name, frame.message
            )
            if node.pending is not None:
                node.pending.replied(frame)

    async def write(self, device: str, point: str, value: Value) -> Value:
        """Switch a gate-relay node's relay (``relay_on``): a signed command, the node's reply,
        then the relay as the node's next report reads it back (:mod:`edge.node_mqtt.commands`)."""
        node = self.nodes.get(device)
        if node is None:
            raise ActuationError(f"source {self.name} has no node {device!r}")
        if (node.kind, point) not in WRITABLE:
            raise ActuationError(
                f"node {device} ({node.kind}) has no writable point {point!r}",
                hint="apps write relay_on of gate-relay nodes",
            )
        if not isinstance(value, bool):
            raise ActuationError(f"node {device} relay_on takes true or false, not {value!r}")
        cfg = self.config.commands
        if self.command_key is None or cfg is None:
            raise ActuationError(
                f"source {self.name} has no command key: node {device} cannot be driven",
                hint="add 'commands: {key_file, delegation_file}' from 'cityedge provision gateway'",
            )
        if node.health == "down":  # its will came: no reply will; the app says so at once
            raise DeviceError(
                f"node {device} is offline (its last will came); command not sent",
                hint="check the node's power and Wi-Fi; it is driven again once it reports",
            )
        async with node.writing:
            loop = asyncio.get_running_loop()
            nonce = secrets.token_bytes(16)
            pending = Pending(
                signed.b64url(nonce), value, loop.create_future(), loop.create_future()
            )
            expires = int(self.ctx.clock.time()) + cfg.command_ttl_s
            data = self.command_key.sign(device, "open" if value else "close", expires, nonce)
            node.pending = pending
            try:
                await self._publish(nodewire.node_topic(self.site, device, "cmd"), data, device)
                what = f"node {device} did not answer the command"
                reply = await within(self.ctx.clock, pending.reply, cfg.reply_timeout_s, what)
                if reply.result is nodewire.Result.REFUSED:
                    raise ActuationError(
                        f"node {device} refused the command: {reply.message}",
                        hint="provision the node with --gateway naming this gateway, and this "
                        "gateway's command key from 'cityedge provision gateway'",
                    )
                if reply.result is not nodewire.Result.DONE:
                    raise DeviceError(
                        f"node {device} could not switch its relay: {reply.message}",
                        hint="check the relay and its wiring on the node",
                    )
                what = f"node {device} did not report its relay after the command"
                back = await within(self.ctx.clock, pending.readback, cfg.readback_timeout_s, what)
            finally:
                node.pending = None
        if back != value:
            raise DeviceError(
                f"node {device} relay_on: wrote {value}, read back {back}",
                hint="the relay did not stay switched: check the node's relay and its log",
            )
        return back

    async def _publish(self, topic: str, data: bytes, device: str) -> None:
        link = self._session.link if self._session is not None else None
        if link is None:
            raise DeviceError(
                f"node {device}: not connected to the site broker; command not sent",
                hint="check the site broker (the source's log says why it is away)",
            )
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await link.publish(topic, data, qos=1)
        except (LinkError, TimeoutError) as err:
            raise DeviceError(
                f"node {device}: the command was not accepted by the site broker: {err}",
                hint="check the site broker and this gateway's ACL entry",
            ) from err

    def _receipt(self, node: _Node, key: tuple[int, int]) -> Callable[[], None]:
        def stored() -> None:
            if key in node.reports:
                node.reports[key] = True
            self._ack(node.name, key)

        return stored

    def _ack(self, name: str, key: tuple[int, int]) -> None:
        self._acks.setdefault((name, key[0]), []).append(key[1])
        self._ack_wake.set()

    async def _send_acks(self, session: MqttSession) -> None:
        """Acknowledge stored reports to their nodes, a frame per node and boot. Lost ones
        (no link, no PUBACK in time) are not retried: the node sends the report again, and
        its repeat is acknowledged."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            acks, self._acks = self._acks, {}
            for (name, boot), seqs in acks.items():
                topic = nodewire.node_topic(self.site, name, "cmd")
                for i in range(0, len(seqs), nodewire.MAX_ACKS):
                    link = session.link
                    if link is None:
                        break
                    frame = nodewire.encode_ack(boot, seqs[i : i + nodewire.MAX_ACKS])
                    try:
                        async with asyncio.timeout(ACK_TIMEOUT_S):
                            await link.publish(topic, frame, qos=1)
                    except (LinkError, TimeoutError) as err:
                        log.debug("acknowledgement to node %s not sent: %s", name, err)
                        break

    async def _status(self, node: _Node, frame: nodewire.StatusFrame, now: float) -> None:
        node.version = frame.version
        version = ".".join(str(v) for v in frame.version)
        state = frame.state
        if state is nodewire.NodeState.OFFLINE:
            if node.health != "down":
                node.health = "down"
                log.warning("node %s offline (%s)", node.name, frame.reason or "will")
                await self._availability(node, env.AvailabilityState.UNAVAILABLE, frame.reason, now)
            return
        if state is nodewire.NodeState.OTA_REFUSED:
            log.warning("node %s refused an update: %s", node.name, frame.reason)
        elif state is nodewire.NodeState.ROLLED_BACK:
            log.warning("node %s rolled back to %s: %s", node.name, version, frame.reason)
        elif state is nodewire.NodeState.OTA_APPLIED:
            log.info("node %s installed firmware %s; restarting", node.name, frame.reason)
        else:
            log.info("node %s %s, firmware %s", node.name, state.name.lower(), version)
        await self._alive(node, now, f"{state.name.lower()}, firmware {version}")

    async def _alive(self, node: _Node, now: float, why: str) -> None:
        self.ctx.metrics.device_up.labels(self.name, node.name).set(1)
        if node.health == "down":
            node.health = "up"
            log.info("node %s recovered: %s", node.name, why)
            await self._availability(node, env.AvailabilityState.RECOVERED, why, now)
        node.health = "up"

    async def _availability(
        self, node: _Node, state: env.AvailabilityState, reason: str, now: float
    ) -> None:
        if state is env.AvailabilityState.UNAVAILABLE:
            self.ctx.metrics.device_up.labels(self.name, node.name).set(0)
        payload = env.AvailabilityPayload(
            state=state, reason=reason or state.value, failed_polls=0, since=env.utc_datetime(now)
        )
        await self.ctx.emitter.send(self.ctx.emitter.availability(node.name, now, payload))
