"""Bounded channels with a named overflow policy.

Every queue in the gateway is one of these. The policy says what happens when it is full:

- ``block``        the producer waits: nothing is lost, back pressure reaches the source
                   (telemetry and events).
- ``drop_newest``  the new item is refused and counted (camera frames: keep the frame being
                   worked on, skip the ones that arrive while busy).
- ``drop_oldest``  the oldest waiting item is evicted and counted (latest-value streams).

A closed channel refuses new items (:class:`ChannelClosed`) and lets consumers take what is
still queued; iteration ends when it is closed and empty. That is how a shutdown flushes: close
the producers' side, let the consumer drain.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import suppress
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class Overflow(StrEnum):
    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class ChannelClosed(Exception):
    """Raised by ``put`` on a closed channel, and by ``get`` on a closed, empty one."""


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return


class Channel(Generic[T]):
    """A bounded FIFO between tasks of one event loop."""

    def __init__(self, name: str, capacity: int, overflow: Overflow = Overflow.BLOCK) -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be >= 1")
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.dropped = 0
        self.accepted = 0
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {len(self._items)}/{self.capacity}, {self.overflow.value})"

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def close(self) -> None:
        """Refuse new items; wake everyone waiting so they see it."""
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    def offer(self, item: T) -> bool:
        """Put without waiting. Returns False when the item was not queued (full or dropped).

        Under ``drop_oldest`` the item is always queued and the oldest evicted instead.
        """
        if self._closed:
            raise ChannelClosed(self.name)
        if self.full():
            if self.overflow is Overflow.DROP_OLDEST:
                self._items.popleft()
                self.dropped += 1
            else:
                if self.overflow is Overflow.DROP_NEWEST:
                    self.dropped += 1
                return False
        self._items.append(item)
        self.accepted += 1
        _wake_one(self._getters)
        return True

    def put_now(self, item: T) -> bool | None:
        """:meth:`put` when it need not wait: its result; None (nothing queued) when a blocking
        channel is full, then ``await put``. Spares the hot paths a coroutine per item."""
        if self.overflow is Overflow.BLOCK and self.full() and not self._closed:
            return None
        return self.offer(item)  # ChannelClosed once closed

    async def put(self, item: T) -> bool:
        """Queue ``item`` by the channel's policy. Returns False if it was dropped."""
        if self.overflow is not Overflow.BLOCK:
            return self.offer(item)
        while self.full():
            if self._closed:
                raise ChannelClosed(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                with suppress(ValueError):
                    self._putters.remove(fut)
                if not self.full():
                    _wake_one(self._putters)
                raise
        return self.offer(item)

    async def _wait_for_item(self) -> None:
        while not self._items:
            if self._closed:
                raise ChannelClosed(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                with suppress(ValueError):
                    self._getters.remove(fut)
                if self._items:
                    _wake_one(self._getters)
                raise

    async def get(self) -> T:
        """The oldest item; waits while empty. :class:`ChannelClosed` when closed and empty."""
        await self._wait_for_item()
        item = self._items.popleft()
        _wake_one(self._putters)
        return item

    async def get_batch(self, max_items: int) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` without waiting more."""
        await self._wait_for_item()
        batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
        for _ in batch:
            _wake_one(self._putters)
        return batch

    def get_nowait(self) -> T | None:
        if not self._items:
            return None
        item = self._items.popleft()
        _wake_one(self._putters)
        return item

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except ChannelClosed:
                return
