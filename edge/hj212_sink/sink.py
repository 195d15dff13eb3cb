"""Sink ``hj212``: the uplink to an environment bureau's platform, HJ 212-2017 over TCP.

What is sent (codec: :mod:`protocols.hj212`):

- real-time data (CN 2011, ``code-Rtd`` and ``code-Flag``) from telemetry, at most every
  ``realtime_interval_s`` per station;
- minute (2051), hour (2061) and day (2031) data (``Min``, ``Avg``, ``Max``, ``Flag``) from the
  ``aggregate`` envelopes of the environment app; DataTime is the period's start in local time.

Each message asks for an answer (Flag A). The sink sends one message at a time and waits
``ack_timeout_s`` (OverTime) for the platform's data answer (9014) with the message's QN; then
sends it again, at most ``resends`` times (ReCount); a message still unanswered is logged and
given up (the platform can ask for history). A message longer than ``max_segment`` goes as split
packets (PNUM/PNO), each answered. A lost connection is opened again with capped backoff, and
the message in flight goes first.

Platform commands are answered as appendix C shows: 9011 (QnRtn), the data asked for, 9012
(ExeRtn): 1000 sets OverTime/ReCount, 1011 reads the time, 1061/1062 read/set the real-time
interval, 2011/2012 start/stop real-time data (2012 is a notification: 9013). A wrong PW or MN
gets QnRtn 3 or 4, an unknown command QnRtn 2.

What the platform sends is outside input: a frame that breaks the codec is skipped (counted in
``bad_frames``, logged the first time and every 100th); a command whose PW, MN or QN cannot be
repeated in an answer is logged and not answered; settings outside the ranges the site file
allows (OverTime 0.1-600 s, ReCount 0-20, RtdInterval 0-86400 s) get ExeRtn 3 and change
nothing. No frame stops the receiver.

Held messages live in memory (bounded; real-time data is dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, Gauge

from edge.backoff import Backoff
from edge.errors import PermanentError, TransientError
from edge.hj212_sink.config import Hj212SinkConfig, Hj212StationConfig
from edge.plugin import Plugin, SinkContext
from protocols import envelope as env
from protocols import hj212
from protocols.errors import EncodeError
from protocols.hj212 import Cn, Cp, FrameReader, Packet

log = logging.getLogger(__name__)

_PERIOD_CN = {"minute": Cn.MINUTE_DATA, "hour": Cn.HOUR_DATA, "day": Cn.DAY_DATA}
_ANSWERED = frozenset(
    {
        Cn.SET_TIMEOUT_RESEND,
        Cn.GET_TIME,
        Cn.SET_TIME,
        Cn.GET_RTD_INTERVAL,
        Cn.SET_RTD_INTERVAL,
        Cn.REALTIME_DATA,
    }
)


class PlatformLost(TransientError):
    """The TCP connection to the platform broke (opened again with backoff)."""


class _BadSetting(PermanentError):
    """A platform command asked for a setting outside what the site file allows (answered
    with ExeRtn 3; never leaves this module)."""


class Hj212SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.buffer = Gauge(
            "cityedge_sink_buffer_depth",
            "Envelopes a sink without an outbox holds in memory (e.g. hj212)",
            ["sink"],
            registry=registry,
        )


def _setting(text: str | None, lo: float, hi: float, what: str) -> float:
    """A number the platform sets (OverTime, ReCount, RtdInterval), within ``lo..hi``."""
    try:
        value = float(text or "")
    except ValueError:
        raise _BadSetting(f"{what}={text!r} is not a number") from None
    if not lo <= value <= hi:  # also refuses NaN and infinity
        raise _BadSetting(f"{what}={text!r} is outside {lo:g}..{hi:g}")
    return value


@dataclass
class _Message:
    parts: list[Packet]  # one, or the split packets (PNUM/PNO) of a long message
    realtime: bool


class Hj212Sink(Plugin):
    def __init__(self, config: Hj212SinkConfig, ctx: SinkContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.buffer_depth = ctx.metrics.own(Hj212SinkMetrics).buffer.labels(config.name)
        self.pw = config.pw.get_secret_value()
        self.tz = timezone(timedelta(hours=config.utc_offset_h))
        self.stations = {s.device: s for s in config.stations}
        self.by_mn = {s.mn: s for s in config.stations}
        self.realtime_interval_s = config.realtime_interval_s
        self.ack_timeout_s = config.ack_timeout_s
        self.resends = config.resends
        self.queue: deque[_Message] = deque()
        self.dropped = 0
        self.sent = 0  # messages the platform answered
        self.unanswered = 0
        self.resent = 0
        self._last_rtd: dict[str, float] = {}
        self._last_qn = ""
        self._wake = asyncio.Event()
        self._intake_done = asyncio.Event()
        self._answers: dict[str, asyncio.Future[Packet]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._backoff = Backoff(0.5, config.reconnect_max_s)
        # the newest platform commands seen (tests read them); bounded, the platform may flood
        self.commands: deque[Packet] = deque(maxlen=100)
        self.bad_frames = 0
        self._frames = FrameReader()

    # -- building messages -------------------------------------------------------------------

    def _local(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, UTC).astimezone(self.tz)

    def new_qn(self) -> str:
        """A QN unique on this link: the local time to the millisecond, bumped if repeated."""
        qn = hj212.new_qn(self._local(self.ctx.clock.time()))
        if qn <= self._last_qn:
            qn = str(int(self._last_qn) + 1)
        self._last_qn = qn
        return qn

    def code_of(self, station: Hj212StationConfig, point: str) -> str | None:
        """The station's own mapping, else appendix B by point name; a plain ``temperature``
        is water temperature on water systems (ST 21, 32) and air temperature otherwise."""
        if point in station.codes:
            return station.codes[point]
        if point == "temperature":
            water = station.st in (hj212.St.SURFACE_WATER, hj212.St.WATER_POLLUTION_SOURCE)
            point = "water_temperature" if water else "air_temperature"
        return hj212.POLLUTANT_CODES.get(point)

    def message_for(self, item: env.Outgoing) -> _Message | None:
        station = self.stations.get(item.device)
        if station is None:
            return None
        item = env.as_model(item)  # telemetry comes encoded: decoded for stations only
        if isinstance(item, env.TelemetryEnvelope):
            if self.realtime_interval_s <= 0:
                return None
            t = item.time.timestamp()
            if t - self._last_rtd.get(item.device, -1e18) < self.realtime_interval_s:
                return None
            values = {
                code: {"Rtd": hj212.format_value(float(r.value)), "Flag": "N"}
                for r in item.payload.readings
                if not isinstance(r.value, bool) and (code := self.code_of(station, r.point))
            }
            if not values:
                return None
            self._last_rtd[item.device] = t
            return self._message(self._data(station, Cn.REALTIME_DATA, t, values), realtime=True)
        if isinstance(item, env.AggregateEnvelope):
            p = item.payload
            if p.period == "minute" and not self.config.send_minutes:
                return None
            values = {
                code: {
                    "Min": hj212.format_value(v.min),
                    "Avg": hj212.format_value(v.avg),
                    "Max": hj212.format_value(v.max),
                    "Flag": v.flag,
                }
                for v in p.values
                if (code := self.code_of(station, v.point))
            }
            if not values:
                return None
            return self._message(
                self._data(station, _PERIOD_CN[p.period], p.start.timestamp(), values),
                realtime=False,
            )
        return None

    def _message(self, packet: Packet, realtime: bool) -> _Message:
        """Split now, so a message that cannot be sent is refused when it comes in (raises
        :class:`EncodeError`), not when it is first in the queue."""
        return _Message(hj212.split(packet, self.config.max_segment), realtime)

    def _data(
        self, station: Hj212StationConfig, cn: int, t: float, values: dict[str, dict[str, str]]
    ) -> Packet:
        return hj212.data_packet(
            cn=cn,
            st=station.st,
            mn=station.mn,
            pw=self.pw,
            qn=self.new_qn(),
            when=self._local(t),
            values=values,
        )

    def hold(self, message: _Message) -> None:
        """Queue a message; when full drop the oldest real-time data, else the oldest message."""
        if len(self.queue) >= self.config.buffer_capacity:
            victim = next((m for m in self.queue if m.realtime), self.queue[0])
            self.queue.remove(victim)
            self.dropped += 1
            self.ctx.metrics.sink_dropped.labels(
                self.name, "realtime" if victim.realtime else "data"
            ).inc()
        self.queue.append(message)
        self.buffer_depth.set(len(self.queue))
        self._wake.set()

    # -- tasks -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._intake())
                tg.create_task(self._deliver())
        finally:
            if self.queue:
                log.warning(
                    "sink %s: %d HJ 212 messages held in memory were not sent",
                    self.name,
                    len(self.queue),
                )
            self._close()

    async def _intake(self) -> None:
        async for item in self.ctx.outbox:
            try:
                message = self.message_for(item)
            except EncodeError as err:  # e.g. a value of 1e300: 300 digits do not fit CP
                self.ctx.metrics.sink_dropped.labels(self.name, "unsendable").inc()
                log.warning(
                    "sink %s: %s envelope %s of %s cannot be sent in HJ 212: %s",
                    self.name, item.kind, item.id, item.device, err,
                )  # fmt: skip
                continue
            if message is not None:
                self.hold(message)
        self._intake_done.set()
        self._wake.set()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _deliver(self) -> None:
        where = f"{self.config.host}:{self.config.port}"
        while not (self._intake_done.is_set() and not self.queue):
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        self.config.host, self.config.port
                    )
            except (OSError, TimeoutError) as err:
                self.ctx.metrics.publish_errors.labels(self.name).inc()
                delay = self._backoff.next_delay()
                log.warning(
                    "sink %s: platform %s unavailable (%s); again in %.1f s",
                    self.name,
                    where,
                    err,
                    delay,
                )
                await self.ctx.clock.sleep(delay)
                continue
            self._backoff.reset()
            self._writer = writer
            log.info("sink %s: connected to the HJ 212 platform %s", self.name, where)
            receiver = asyncio.create_task(self._receive(reader))
            try:
                await self._send_queue()
            except PlatformLost as err:
                log.warning("sink %s: lost the platform %s: %s", self.name, where, err)
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, PlatformLost):
                    await receiver
                self._close()

    async def _send_queue(self) -> None:
        while True:
            if not self.queue:
                if self._intake_done.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            message = self.queue[0]
            for part in message.parts:
                await self._send_answered(part)
            self.queue.popleft()
            self.buffer_depth.set(len(self.queue))

    async def _send_answered(self, packet: Packet) -> None:
        """Send, wait for the data answer, resend; raises PlatformLost when the connection breaks."""
        frame = packet.encode()
        qn = packet.qn or ""
        for attempt in range(self.resends + 1):
            future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
            self._answers[qn] = future
            await self._write(frame)
            try:
                async with asyncio.timeout(self.ack_timeout_s):
                    await future
            except TimeoutError:
                if attempt < self.resends:
                    self.resent += 1
                continue
            finally:
                self._answers.pop(qn, None)
            self.sent += 1
            self.ctx.metrics.published.labels(self.name, f"hj212-{packet.cn}").inc()
            return
        self.unanswered += 1
        log.warning(
            "sink %s: no answer to %s after %d sends; given up",
            self.name, hj212.describe(packet), self.resends + 1,
        )  # fmt: skip

    async def _write(self, frame: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise PlatformLost("connection closed")
        try:
            writer.write(frame)
            async with asyncio.timeout(self.config.connect_timeout_s):
                await writer.drain()
        except (OSError, TimeoutError) as err:
            raise PlatformLost(str(err) or type(err).__name__) from err

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        self._frames = FrameReader()  # a new connection starts a new stream
        while True:
            try:
                data = await reader.read(4096)
            except OSError as err:
                raise PlatformLost(str(err)) from err
            if not data:
                self._close()  # the writer sees it and the sender gives up the connection
                for f in self._answers.values():
                    if not f.done():
                        f.set_exception(PlatformLost("platform closed the connection"))
                raise PlatformLost("platform closed the connection")
            await self.received(data)

    async def received(self, data: bytes) -> None:
        """Bytes from the platform: answers end waits, commands are answered (public for tests
        and fuzzing). Raises only :class:`PlatformLost` (when an answer cannot be written)."""
        self._frames.feed(data)
        for event in self._frames.events():
            if isinstance(event, hj212.BadFrame):
                self._bad_frame(str(event.error))
                continue
            await self._from_platform(event)

    def _bad_frame(self, why: str) -> None:
        self.bad_frames += 1
        if self.bad_frames == 1 or self.bad_frames % 100 == 0:
            log.warning(
                "sink %s: bad frame from the platform (%d so far): %s",
                self.name, self.bad_frames, why[:200],
            )  # fmt: skip

    async def _from_platform(self, p: Packet) -> None:
        if p.cn == Cn.DATA_ANSWER or p.cn == Cn.NOTIFY_ANSWER:
            future = self._answers.get(p.qn or "")
            if future is not None and not future.done():
                future.set_result(p)
            return
        if p.cn == Cn.REQUEST_ANSWER and p.cp.get("QnRtn") not in (None, "1"):
            text = p.cp.get("QnRtn") or ""
            code = int(text) if text.isdigit() and len(text) <= 3 else 100
            log.error(
                "sink %s: the platform refused QN %s: %s (QnRtn %s); check pw and the stations' mn",
                self.name, p.qn, hj212.QN_RTN.get(code, "unknown"), text[:8],
            )  # fmt: skip
            return
        if p.cn in (Cn.REQUEST_ANSWER, Cn.EXECUTE_RESULT):
            return
        self.commands.append(p)
        if self.config.answer_platform == "yes":
            await self._command(p)

    async def _command(self, p: Packet) -> None:
        """Answer one platform request (appendix C order: QnRtn, data, ExeRtn)."""
        try:
            hj212.request_answer(p, 1).encode()
        except EncodeError as err:  # an answer repeats PW, MN and QN: these cannot be repeated
            self._bad_frame(f"command CN={p.cn} cannot be answered: {err}")
            return
        if p.pw != self.pw:
            await self._write(hj212.request_answer(p, 3).encode())
            return
        if p.mn not in self.by_mn:
            await self._write(hj212.request_answer(p, 4).encode())
            return
        cn = p.cn
        if cn == Cn.STOP_REALTIME:
            self.realtime_interval_s = 0
            await self._write(hj212.answer(p, Cn.NOTIFY_ANSWER).encode())
            return
        if cn not in _ANSWERED:
            await self._write(hj212.request_answer(p, 2).encode())
            return
        await self._write(hj212.request_answer(p, 1).encode())
        exe = 1
        reply: Cp | None = None
        try:
            if cn == Cn.SET_TIMEOUT_RESEND:  # the ranges of ack_timeout_s and resends
                over, recount = p.cp.get("OverTime"), p.cp.get("ReCount")
                timeout = _setting(over, 0.1, 600, "OverTime") if over else self.ack_timeout_s
                resends = _setting(recount, 0, 20, "ReCount") if recount else self.resends
                if not float(resends).is_integer():
                    raise _BadSetting(f"ReCount={recount!r} is not a whole number")
                self.ack_timeout_s, self.resends = timeout, int(resends)
            elif cn == Cn.SET_RTD_INTERVAL:
                interval = _setting(p.cp.get("RtdInterval"), 0, 86400, "RtdInterval")
                self.realtime_interval_s = interval
            elif cn == Cn.GET_RTD_INTERVAL:
                reply = Cp.of(RtdInterval=hj212.format_value(self.realtime_interval_s, 0))
            elif cn == Cn.GET_TIME:
                reply = Cp.of(SystemTime=hj212.data_time(self._local(self.ctx.clock.time())))
            elif cn == Cn.SET_TIME:
                exe = 3  # the gateway keeps its own clock (NTP); refuse rather than pretend
            elif cn == Cn.REALTIME_DATA and self.realtime_interval_s <= 0:
                self.realtime_interval_s = self.config.realtime_interval_s or 30.0
        except _BadSetting as err:
            log.warning("sink %s: platform command CN=%d refused: %s", self.name, cn, err)
            exe = 3
        log.info("sink %s: platform command CN=%d for %s: ExeRtn %d", self.name, cn, p.mn, exe)
        if reply is not None:
            data = Packet(
                st=p.st, cn=cn, pw=self.pw, mn=p.mn, qn=p.qn, flag=hj212.make_flag(), cp=reply
            )
            await self._write(data.encode())
        await self._write(hj212.execute_result(p, exe).encode())
