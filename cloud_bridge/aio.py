"""asyncio pieces both halves share: the injected clock, the ``open()`` that works with
``async with`` and with ``await``, a wait that a stop event cuts short, a wait bounded on
the injected clock, and :class:`Slots` (a semaphore that costs nothing when nobody waits).

:class:`Clock` and :class:`SystemClock` are the gateway's too: ``edge.clock`` re-exports them
beside its ``VirtualClock`` (``cloud_bridge`` may not import ``edge``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """Time, injected, so tests can skip ahead."""

    def time(self) -> float:
        """Wall-clock Unix time in seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the monotonic clock (returns at once for <= 0)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class Opening(Generic[T]):
    """What ``open()`` returns: ``async with X.open(...) as x`` closes ``x`` on the way out;
    ``x = await X.open(...)`` leaves the closing to the caller (as aiohttp's requests do).

    Nothing starts until it is awaited or entered, so an ``Opening`` dropped unused leaves no
    coroutine behind.
    """

    def __init__(
        self,
        open_: Callable[[], Coroutine[Any, Any, T]],
        close: Callable[[T, BaseException | None], Awaitable[None]],
    ) -> None:
        self._open = open_
        self._close = close
        self._value: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._open().__await__()

    async def __aenter__(self) -> T:
        self._value = await self._open()
        return self._value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        value, self._value = self._value, None
        if value is not None:
            await self._close(value, exc)


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event | None) -> T | None:
    """Await ``work``; if ``stop`` is set first, cancel it and return None.

    What ``work`` finished with wins over a stop that came at the same moment (a link that
    connected is returned, for the caller to close)."""
    if stop is None:
        return await work
    if stop.is_set():
        if asyncio.iscoroutine(work):
            work.close()  # never started: nothing to cancel
        return None
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            # owned to its end: a cancelled connect tears its socket down before this returns
            await asyncio.wait({task})
    if task.cancelled():
        return None
    return task.result()


async def done_within(clock: Clock, fut: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for ``fut`` at most ``seconds`` on ``clock``; True when it is done. ``fut`` is not
    cancelled either way (a caller that made it for the wait cancels it)."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
    return fut.done()


class Slots:
    """At most ``limit`` holders at once, handed over in order of asking: an
    ``asyncio.Semaphore`` without its cost where it is taken per message (the MQTT link's
    in-flight window, a Modbus device's requests on the wire). Python 3.11's
    ``Semaphore.acquire`` scans its waiters through a generator on every call, even when free;
    here a free slot is a comparison (:meth:`try_acquire`), and ``await acquire()`` is only
    needed when it says no. :meth:`fail` ends every wait with an exception (a lost link)."""

    __slots__ = ("_waiters", "in_use", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits before us."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() handed its slot over: in_use already counts it
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # handed over as we were cancelled: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1

    def fail(self, err: BaseException) -> None:
        """Every waiter raises ``err`` (the slots will never come free)."""
        waiters, self._waiters = self._waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(err)

    @property
    def waiting(self) -> int:
        return len(self._waiters)
