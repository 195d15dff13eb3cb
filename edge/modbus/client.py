"""The Modbus plug-in's own client: the sans-IO codec (:mod:`protocols.modbus_wire`) on an
``asyncio.Protocol`` for Modbus TCP, and on a serial port for RTU.

- :class:`TcpLine` is one TCP connection (to a device or to a Modbus gateway in front of many
  units). Requests are matched to replies by transaction id, so several may be in flight at
  once and replies may come in any order; a reply that comes after its request timed out is
  dropped (counted in ``stray``), never taken for another. Requests made in the same turn of the
  event loop leave in one write. A unit that does not answer costs its own request a timeout
  and nothing else: the connection stays up for the others, unless nothing at all has answered
  for ``3 + units`` requests in a row (a half-open connection), then it is closed and opened
  again by the next request. Deadlines are kept in order in one queue per connection with one
  timer for its earliest, rather than a timer per request (a timer made and cancelled per
  request was a tenth of the gateway's CPU polling 500 devices flat out).
- :class:`RtuLine` is one serial line: one owner, one request at a time, and after every
  exchange the line stays silent for t3.5 (Modbus over Serial Line 2.5.1.1) before the next
  frame. Bytes left over from a late answer are discarded before each request; a whole frame
  from another unit (one answering late) is skipped, and a reply is accepted only from the
  unit asked with a good CRC.

Both raise :class:`NoReply` when a unit did not answer within the deadline (it trips the
unit's breaker), :class:`BusDown` when the connection or the line itself is unusable, and
return the reply otherwise — an :class:`~protocols.modbus_wire.ExceptionReply` too; what it
means for people is the source's business.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from edge.backoff import Backoff
from edge.errors import DeviceError
from edge.polling import NoAnswer
from protocols.errors import DecodeError
from protocols.modbus_wire import (
    FramingError,
    MbapClient,
    Reply,
    Request,
    crc16,
    decode_rtu,
    encode_rtu,
    rtu_reply_size,
)

log = logging.getLogger(__name__)


class NoReply(NoAnswer):
    """A unit did not answer within the deadline (what trips its breaker)."""

    code = "CE311"


class BusDown(DeviceError):
    """The connection or serial line itself is unusable (no unit is to blame)."""

    code = "CE312"


class BadReply(DeviceError):
    """A unit answered with bytes that cannot answer the request (the peer broke Modbus)."""


class Line(abc.ABC):
    """What :class:`TcpLine` and :class:`RtuLine` share: opening with backoff, messages."""

    verbs = ("connect to", "connected to")  # how opening this kind of line is said

    def __init__(
        self,
        where: str,
        connect_timeout_s: float,
        reconnect_max_s: float,
        bus_hint: str,
        no_reply_hint: str,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self._now = now
        self.connect_timeout_s = connect_timeout_s
        self.bus_hint = bus_hint
        self.no_reply_hint = no_reply_hint
        self.requests = 0  # requests sent (benchmarks read it)
        self.stray = 0  # replies that came after their request timed out, dropped
        self._next_open = 0.0
        self._reopen = Backoff(0.5, reconnect_max_s)
        self._opening: asyncio.Task[None] | None = None

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """The line can take a request now."""

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect or open the line (the caller bounds it with ``connect_timeout_s``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the line (the next request opens it again)."""

    @abc.abstractmethod
    async def request(self, req: Request, timeout_s: float) -> Reply:
        """Send ``req`` and wait at most ``timeout_s`` for its reply."""

    async def ensure_open(self) -> None:
        """Open the line unless it is; :class:`BusDown` while it cannot be (with backoff)."""
        if self.is_open:
            return
        if self._opening is None:  # requests waiting for the same opening share it
            self._opening = asyncio.ensure_future(self._open_once())
        opening = self._opening
        try:
            await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open_once(self) -> None:
        now = self._now()
        if now < self._next_open:
            raise BusDown(
                f"no connection to {self.where}; next attempt in {self._next_open - now:.1f} s",
                hint=self.bus_hint,
            )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._open()
        except (TimeoutError, OSError) as err:
            self.close()
            self._next_open = self._now() + self._reopen.next_delay()
            raise BusDown(f"cannot {self.verbs[0]} {self.where}", hint=self.bus_hint) from err
        self._reopen.reset()
        # said at each (re)connection: the README and a technician wait for this line
        log.info("%s %s", self.verbs[1], self.where)

    def lost(self) -> None:
        """The line went down under a request: the next one opens it again at once."""
        self.close()
        self._next_open = 0.0

    def no_reply(self, req: Request, timeout_s: float) -> NoReply:
        return NoReply(
            f"no reply from unit {req.unit} on {self.where} (fc {req.function}, "
            f"{req.address}+{req.count}) within {timeout_s} s",
            hint=self.no_reply_hint,
        )

    def bad_reply(self, req: Request, err: DecodeError) -> BadReply:
        return BadReply(
            f"unit {req.unit} on {self.where} answered fc {req.function} "
            f"{req.address}+{req.count} with a reply that does not fit: {err}",
            hint="check that no other program talks to this unit and that the unit id is "
            "unique on the bus",
        )


_LOST = object()  # a pending request's outcome when the connection went down


class TcpLine(Line, asyncio.Protocol):
    """One Modbus TCP connection (see the module docstring)."""

    def __init__(self, host: str, port: int, units: int, **kw: Any) -> None:
        Line.__init__(self, **kw)
        self.host = host
        self.port = port
        self.units = units
        self._transport: asyncio.Transport | None = None
        self._session = MbapClient()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._out: list[bytes] = []
        self._flush_at: asyncio.Handle | None = None
        self._unanswered = 0  # requests in a row that got no reply at all
        self._loop: asyncio.AbstractEventLoop | None = None
        # (deadline, its request's future) in the order sent, and the timer for the earliest
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._expire_at: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._session = MbapClient()
        await loop.create_connection(lambda: self, self.host, self.port)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            answers = self._session.receive(data)
        except FramingError as err:
            self._fail_all(err)
            self.lost()
            return
        waiting = self._waiting
        for a in answers:
            fut = waiting.pop(a.transaction, None)
            if fut is not None and not fut.done():
                fut.set_result(a.reply)
        if answers:
            self._unanswered = 0
        self.stray = self._session.stray

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail_all(exc)

    def _fail_all(self, exc: BaseException | None) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_result(_LOST)
        self._out.clear()

    # -- requests -----------------------------------------------------------------------------

    async def request(self, req: Request, timeout_s: float) -> Reply:
        """Send ``req`` and wait for its reply (see the module docstring for the errors)."""
        if self._transport is None or self._transport.is_closing():
            await self.ensure_open()
        loop = self._loop or asyncio.get_running_loop()
        tid, frame = self._session.send(req)
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting[tid] = fut
        self._out.append(frame)
        if self._flush_at is None:
            self._flush_at = loop.call_soon(self._flush)
        self.requests += 1
        timer = self._deadline(loop, loop.time() + timeout_s, fut)
        try:
            outcome = await fut
        except asyncio.CancelledError:
            self._forget(tid)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if outcome is _EXPIRED:
            self._forget(tid)
            self._unanswered += 1
            if self._unanswered > 3 + self.units:  # nothing answers at all: half-open?
                self._unanswered = 0
                self.lost()
            raise self.no_reply(req, timeout_s)
        if outcome is _LOST:
            raise BusDown(
                f"lost {self.where} during fc {req.function} to unit {req.unit}",
                hint=self.bus_hint,
            )
        if isinstance(outcome, DecodeError):
            raise self.bad_reply(req, outcome)
        reply: Reply = outcome
        return reply

    def _forget(self, tid: int) -> None:
        self._waiting.pop(tid, None)
        self._session.forget(tid)

    def _deadline(
        self, loop: asyncio.AbstractEventLoop, deadline: float, fut: asyncio.Future[Any]
    ) -> asyncio.TimerHandle | None:
        """Expire ``fut`` at ``deadline``: queued behind the others (deadlines of one line come
        in order), or a timer of its own for one earlier than the last queued."""
        queue = self._deadlines
        while queue and queue[0][1].done():  # answered: nothing to expire any more
            queue.popleft()
        if queue and deadline < queue[-1][0]:
            return loop.call_at(deadline, _expire, fut)
        queue.append((deadline, fut))
        if self._expire_at is None:
            self._expire_at = loop.call_at(deadline, self._expire_due)
        return None

    def _expire_due(self) -> None:
        """The earliest deadline came: expire every request past its deadline, then wait for
        the next one still unanswered."""
        self._expire_at = None
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        queue = self._deadlines
        while queue:
            deadline, fut = queue[0]
            if not fut.done():
                if deadline > now:
                    self._expire_at = loop.call_at(deadline, self._expire_due)
                    return
                fut.set_result(_EXPIRED)
            queue.popleft()

    def _flush(self) -> None:
        self._flush_at = None
        if self._out and self._transport is not None:
            out = self._out
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what waits
            self._transport = None
        self._fail_all(None)


_EXPIRED = object()


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(_EXPIRED)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RtuLine(Line):
    """One RTU serial line (see the module docstring). ``silence_s`` is t3.5."""

    verbs = ("open", "opened")

    def __init__(
        self,
        device: str,
        baudrate: int,
        parity: str,
        stopbits: int,
        silence_s: float,
        open_serial: Callable[..., Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.device = device
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.silence_s = silence_s
        self._open_serial = open_serial
        self._port: Any = None  # a serial.Serial
        self._fd = -1
        self._lock = asyncio.Lock()  # one exchange on the line at a time
        self._buf = bytearray()
        self._wanted: Callable[[], None] | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    async def _open(self) -> None:
        opener = self._open_serial
        if opener is None:
            import serial  # type: ignore[import-untyped]  # pyserial ships no type hints

            opener = serial.Serial
        port = opener(
            self.device,
            baudrate=self.baudrate,
            bytesize=8,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=0,
            write_timeout=0,
        )
        self._port = port
        self._fd = port.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            self.lost()
            if self._wanted is not None:
                self._wanted()
            return
        self._buf += data
        if self._wanted is not None:
            self._wanted()

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None
            self._fd = -1

    async def request(self, req: Request, timeout_s: float) -> Reply:
        async with self._lock:
            await self.ensure_open()
            try:
                return await self._exchange(req, timeout_s)
            finally:
                if self.silence_s:
                    await asyncio.sleep(self.silence_s)  # t3.5 before the next frame

    async def _exchange(self, req: Request, timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        self._buf.clear()  # whatever a late answer left is not the reply to this request
        frame = encode_rtu(req.unit, req.pdu)
        try:
            os.write(self._fd, frame)
        except OSError as err:
            self.lost()
            raise BusDown(f"cannot write to {self.where}: {err}", hint=self.bus_hint) from err
        self.requests += 1
        deadline = loop.time() + timeout_s
        while True:
            size = rtu_reply_size(req, bytes(self._buf[:3]))
            if size is not None and len(self._buf) >= size:
                reply_frame = bytes(self._buf[:size])
                del self._buf[:size]
                if reply_frame[0] != req.unit and crc16(reply_frame[:-2]) == int.from_bytes(
                    reply_frame[-2:], "little"
                ):
                    self.stray += 1  # another unit's late answer: not ours, wait on
                    continue
                try:
                    return decode_rtu(req, reply_frame)
                except DecodeError as err:
                    raise self.bad_reply(req, err) from err
            if self._port is None:
                raise BusDown(
                    f"lost {self.where} during fc {req.function} to unit {req.unit}",
                    hint=self.bus_hint,
                )
            more: asyncio.Future[None] = loop.create_future()
            self._wanted = functools.partial(_wake, more)
            try:
                async with asyncio.timeout_at(deadline):
                    await more
            except TimeoutError:
                raise self.no_reply(req, timeout_s) from None
            finally:
                self._wanted = None
