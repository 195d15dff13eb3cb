"""Time, injected: every component takes a :class:`Clock` so tests can skip ahead.

``time()`` is wall-clock Unix seconds (for timestamps on envelopes); ``monotonic()`` is for
intervals, deadlines and schedules; ``sleep()`` waits on the same monotonic scale.

Network deadlines on real sockets use the event loop's own clock (``asyncio.timeout``), because a
virtual clock cannot make a socket answer sooner.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

# Clock and SystemClock live in cloud_bridge.aio: the bridge, the MQTT session and the ingest
# take them too, and cloud_bridge may not import edge (as with edge.backoff)
from cloud_bridge.aio import Clock, SystemClock

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class VirtualClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order; ``advance`` yields to the loop after each wake-up so the
    woken tasks run before time moves on.
    """

    def __init__(self, start_wall: float = 1_700_000_000.0, start_mono: float = 1000.0) -> None:
        self._wall0 = start_wall
        self._mono0 = start_mono
        self._now = start_mono
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall0 + (self._now - self._mono0)

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline passes."""
        target = self._now + seconds
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()

    @staticmethod
    async def _settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)
