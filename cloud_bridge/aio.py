"""asyncio pieces both halves share: the injected clock, the ``open()`` that works with
``async with`` and with ``await``, a wait that a stop event cuts short, and a wait bounded on
the injected clock.

:class:`Clock` and :class:`SystemClock` are the gateway's too: ``edge.clock`` re-exports them
beside its ``VirtualClock`` (``cloud_bridge`` may not import ``edge``).
"""

from __future__ import annotations

import asyncio
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
