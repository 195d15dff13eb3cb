"""The shared asyncio pieces: :class:`Slots`, the semaphore the MQTT window and a Modbus
device's in-flight limit use."""

from __future__ import annotations

import asyncio

import pytest

from cloud_bridge.aio import Slots


async def test_slots_are_handed_over_in_order_of_asking() -> None:
    slots = Slots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)

    waiters = [asyncio.create_task(take(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert slots.waiting == 3
    assert not slots.try_acquire()  # nobody jumps the queue, even when one comes free
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert order == ["a", "b"] and slots.in_use == 2
    slots.release()
    await asyncio.wait_for(waiters[2], 1)
    assert order == ["a", "b", "c"] and slots.in_use == 2


async def test_a_cancelled_waiter_passes_its_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to the first ...
    first.cancel()  # ... cancelled before it ran: the slot goes to the second
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert slots.in_use == 1 and slots.waiting == 0
    slots.release()
    assert slots.in_use == 0


async def test_fail_ends_every_wait_and_keeps_the_count() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    slots.fail(ConnectionError("gone"))
    for w in waiters:
        with pytest.raises(ConnectionError, match="gone"):
            await w
    assert slots.in_use == 1 and slots.waiting == 0
