"""``cityedge simulate gateways``: many light gateway sessions in one process, for load tests of
the city brain (a broker cluster, the ingest, PostgreSQL).

Each simulated gateway does what the wire contract asks of a real one, and no more:

- **Birth and will.** It connects (MQTT, clean session: no queue kept for it at the broker),
  with its death as the will, then publishes its birth (retained, QoS 1). Every connection is a
  new session number, one more than the last, as a real gateway's.
- **Telemetry** at ``rate_per_gateway`` envelopes/s, QoS 1, each with its link info: ``session``,
  ``seq`` (from 1 in each session) and ``pos`` (one more per envelope made, never reused). One
  envelope is in flight at a time; it leaves the gateway's memory only once the broker
  acknowledged it. After a lost connection the unacknowledged ones are sent again, first, in the
  next session (same id and ``pos``, new ``session`` and ``seq``): duplicates in transit, never a
  loss. The backlog is bounded (``backlog_max``; oldest dropped and counted, as the real outbox
  drops telemetry under its budget).
- **Spread over the nodes**: gateway ``i`` starts on endpoint ``i mod n`` and moves on to the
  next after a failed attempt or a lost connection (:class:`~cloud_bridge.session.MqttSession`).
- **Stop** (SIGTERM, or ``duration_s``): no new envelopes; the backlog is sent for up to
  ``drain_s``; then the death, retained, and a clean disconnect. The report says, per gateway,
  the last position made and how many are still unacknowledged: what the city brain must hold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cloud_bridge.aio import Clock, SystemClock, unless_stopped
from cloud_bridge.link import LinkError, LinkSettings, MqttLink, Will
from cloud_bridge.session import Endpoint, MqttSession, SessionSettings
from protocols import envelope as env
from protocols import ids, topics
from protocols.session import GatewayState, LinkState, encode_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetSettings:
    endpoints: tuple[Endpoint, ...]
    count: int
    site: str = "sim"
    prefix: str = "gw"
    rate_per_gateway: float = 1.0  # envelopes/s
    protocol: Literal["auto", "5", "3.1.1"] = "3.1.1"  # NATS speaks 3.1.1 only
    keepalive_s: int = 10
    start_spread_s: float = 2.0  # connects spread over this long (no thundering herd)
    drain_s: float = 30.0
    backlog_max: int = 10_000
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    publish_timeout_s: float = 10.0


@dataclass
class GatewayReport:
    pos: int = 0  # the last position made
    unacked: int = 0  # made and never acknowledged by the broker (still in the backlog)
    dropped: int = 0  # the oldest, dropped from a full backlog
    sessions: int = 0
    published: int = 0  # publishes acknowledged (sent again ones too)


class SimGateway:
    def __init__(
        self, settings: FleetSettings, index: int, clock: Clock, session_base: int
    ) -> None:
        self.settings = settings
        self.name = f"{settings.prefix}-{index:05d}"
        self.clock = clock
        self.report = GatewayReport()
        self.session = session_base  # one more on each connection
        self.backlog: collections.deque[tuple[int, bytes]] = collections.deque()
        self._ids = ids.Uuid7Generator()
        n = len(settings.endpoints)
        mine = [settings.endpoints[(index + k) % n] for k in range(n)]
        self._state_topic = topics.state_topic(settings.site, self.name)
        self._topic = topics.data_topic(settings.site, self.name, "telemetry", f"{self.name}-s1")
        self.mqtt = MqttSession(
            SessionSettings(
                link=LinkSettings(
                    host=mine[0].host,
                    port=mine[0].port,
                    client_id=f"{settings.site}-{self.name}",
                    username=settings.username,
                    password=settings.password,
                    protocol=settings.protocol,
                    keepalive_s=settings.keepalive_s,
                    connect_timeout_s=10.0,
                    max_inflight=10,
                ),
                endpoints=tuple(mine[1:]),
                reconnect_initial_s=0.2,
                reconnect_max_s=2.0,
                name=f"gateway {self.name}",
            ),
            clock=clock,
            will=self._will,
            on_connect=self._birth,
            logger=None,  # thousands of them: the fleet reports outages, not each gateway
        )

    def _state(self, state: LinkState, reason: str = "") -> bytes:
        return encode_state(
            GatewayState(
                state=state,
                site=self.settings.site,
                gateway=self.name,
                session=self.session,
                time=datetime.fromtimestamp(self.clock.time(), UTC),
                reason=reason,
            )
        )

    async def _will(self) -> Will:
        self.session += 1
        self.report.sessions += 1
        return Will(self._state_topic, self._state(LinkState.OFFLINE, "connection lost"))

    async def _birth(self, link: MqttLink) -> None:
        async with asyncio.timeout(self.settings.publish_timeout_s):
            await link.publish(self._state_topic, self._state(LinkState.ONLINE), retain=True)

    def _make(self) -> None:
        now = self.clock.time()
        e = env.TelemetryEnvelope(
            id=self._ids.new(int(now * 1000)),
            site=self.settings.site,
            gateway=self.name,
            device=f"{self.name}-s1",
            time=datetime.fromtimestamp(now, UTC),
            payload=env.TelemetryPayload(
                readings=[env.PointValue(point="level", value=round(now % 100, 3), unit="m")]
            ),
        )
        self.report.pos += 1
        if len(self.backlog) >= self.settings.backlog_max:
            self.backlog.popleft()
            self.report.dropped += 1
        self.backlog.append((self.report.pos, env.encode(e)))

    async def run(self, producing: asyncio.Event, stop: asyncio.Event, delay_s: float) -> None:
        """Send until ``stop``; make envelopes while ``producing`` is set."""
        await unless_stopped(self.clock.sleep(delay_s), stop)
        period = 1.0 / self.settings.rate_per_gateway
        due = self.clock.monotonic()
        async with self.mqtt:
            async for link in self.mqtt.links():
                seq = 0
                while not stop.is_set():
                    if producing.is_set():
                        while self.clock.monotonic() >= due:
                            self._make()
                            due += period
                    if not self.backlog:
                        if not producing.is_set():
                            break  # drained
                        wait = max(0.0, due - self.clock.monotonic())
                        await unless_stopped(self.clock.sleep(wait), stop)
                        continue
                    pos, encoded = self.backlog[0]
                    seq += 1
                    try:
                        async with asyncio.timeout(self.settings.publish_timeout_s):
                            await link.publish(
                                self._topic, env.with_link(encoded, self.session, seq, pos)
                            )
                    except (LinkError, TimeoutError):
                        break  # the next link: a new session, the backlog sent again
                    if self.backlog and self.backlog[0][0] == pos:
                        self.backlog.popleft()
                    self.report.published += 1
                if stop.is_set() or (not producing.is_set() and not self.backlog):
                    if link.connected:
                        with contextlib.suppress(LinkError, TimeoutError):
                            async with asyncio.timeout(self.settings.publish_timeout_s):
                                await link.publish(
                                    self._state_topic,
                                    self._state(LinkState.OFFLINE, "stopped"),
                                    retain=True,
                                )
                    break
        self.report.unacked = len(self.backlog)


async def run_fleet(
    settings: FleetSettings,
    stop: asyncio.Event,
    duration_s: float | None = None,
    clock: Clock | None = None,
) -> dict[str, GatewayReport]:
    """Run ``settings.count`` gateways until ``stop`` (or ``duration_s``), drain, report."""
    clock = clock or SystemClock()
    base = int(clock.time() * 1000)  # sessions grow across runs of the simulator too
    fleet = [SimGateway(settings, i, clock, base) for i in range(settings.count)]
    producing = asyncio.Event()
    producing.set()
    drained = asyncio.Event()  # set after drain_s: what is still unsent stays unsent
    spread = settings.start_spread_s / max(1, settings.count)

    async def stopper() -> None:
        if duration_s is None:
            await stop.wait()
        else:
            await unless_stopped(clock.sleep(duration_s), stop)
        producing.clear()
        log.info("fleet: stopped making envelopes; draining for up to %g s", settings.drain_s)
        await unless_stopped(clock.sleep(settings.drain_s), drained)
        drained.set()

    async with asyncio.TaskGroup() as tg:
        ender = tg.create_task(stopper())
        runs = [
            tg.create_task(gw.run(producing, drained, i * spread), name=gw.name)
            for i, gw in enumerate(fleet)
        ]
        await asyncio.gather(*runs)
        ender.cancel()
    return {gw.name: gw.report for gw in fleet}


def report_json(reports: dict[str, GatewayReport], started: float) -> dict[str, Any]:
    return {
        "gateways": {name: r.__dict__ for name, r in reports.items()},
        "made": sum(r.pos for r in reports.values()),
        "unacked": sum(r.unacked for r in reports.values()),
        "dropped": sum(r.dropped for r in reports.values()),
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def parse_endpoints(value: str) -> tuple[Endpoint, ...]:
    """``host:port,host:port`` -> endpoints; ValueError naming the bad one."""
    found: list[Endpoint] = []
    for item in (v.strip() for v in value.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r}: expected host:port")
        found.append(Endpoint(host, int(port)))
    return tuple(found)


def dump(reports: dict[str, GatewayReport], started: float) -> str:
    return json.dumps(report_json(reports, started), indent=1)


__all__: Sequence[str] = ("FleetSettings", "GatewayReport", "SimGateway", "run_fleet")
