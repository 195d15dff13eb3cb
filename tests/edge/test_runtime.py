"""Channels, backoff, the supervisor on a virtual clock, availability."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from edge.availability import Availability, Health
from edge.backoff import Backoff
from edge.channel import Channel, ChannelClosed, Overflow
from edge.clock import VirtualClock
from edge.errors import PermanentError, TransientError
from edge.supervisor import ChildSpec, ChildState, RestartPolicy, Supervisor

# -- channels ---------------------------------------------------------------------------------


async def test_block_policy_waits_and_loses_nothing() -> None:
    ch: Channel[int] = Channel("t", 2, Overflow.BLOCK)
    await ch.put(1)
    await ch.put(2)
    third = asyncio.ensure_future(ch.put(3))
    await asyncio.sleep(0)
    assert not third.done()
    assert await ch.get() == 1
    await third
    assert [await ch.get(), await ch.get()] == [2, 3]
    assert ch.dropped == 0


async def test_put_now_is_put_where_put_would_not_wait() -> None:
    block: Channel[int] = Channel("t", 2, Overflow.BLOCK)
    assert [block.put_now(1), block.put_now(2)] == [True, True]
    assert block.put_now(3) is None  # full: nothing queued, the caller awaits put
    assert block.depth == 2 and block.dropped == 0
    newest: Channel[int] = Channel("n", 1, Overflow.DROP_NEWEST)
    oldest: Channel[int] = Channel("o", 1, Overflow.DROP_OLDEST)
    assert [newest.put_now(1), newest.put_now(2)] == [True, False]
    assert [oldest.put_now(1), oldest.put_now(2)] == [True, True]
    assert (newest.get_nowait(), oldest.get_nowait()) == (1, 2)
    block.close()
    with pytest.raises(ChannelClosed):
        block.put_now(4)


async def test_drop_newest_refuses_and_counts() -> None:
    ch: Channel[int] = Channel("frames", 2, Overflow.DROP_NEWEST)
    assert [await ch.put(i) for i in range(5)] == [True, True, False, False, False]
    assert ch.dropped == 3
    assert [ch.get_nowait(), ch.get_nowait(), ch.get_nowait()] == [0, 1, None]


async def test_drop_oldest_evicts_and_counts() -> None:
    ch: Channel[int] = Channel("latest", 2, Overflow.DROP_OLDEST)
    for i in range(5):
        await ch.put(i)
    assert ch.dropped == 3
    assert await ch.get_batch(10) == [3, 4]


async def test_close_drains_then_ends_iteration() -> None:
    ch: Channel[int] = Channel("t", 10)
    for i in range(3):
        await ch.put(i)
    ch.close()
    with pytest.raises(ChannelClosed):
        await ch.put(9)
    assert [x async for x in ch] == [0, 1, 2]
    with pytest.raises(ChannelClosed):
        await ch.get()


async def test_close_wakes_blocked_producer_and_consumer() -> None:
    full: Channel[int] = Channel("full", 1)
    await full.put(1)
    producer = asyncio.ensure_future(full.put(2))
    empty: Channel[int] = Channel("empty", 1)
    consumer = asyncio.ensure_future(empty.get())
    await asyncio.sleep(0)
    full.close()
    empty.close()
    with pytest.raises(ChannelClosed):
        await producer
    with pytest.raises(ChannelClosed):
        await consumer


async def test_cancelled_getter_does_not_lose_an_item() -> None:
    ch: Channel[int] = Channel("t", 4)
    g1 = asyncio.ensure_future(ch.get())
    g2 = asyncio.ensure_future(ch.get())
    await asyncio.sleep(0)
    await ch.put(7)
    g1.cancel()
    await asyncio.sleep(0)
    assert await asyncio.wait_for(g2, 1) == 7 or g1.result() == 7


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Channel("x", 0)


# -- backoff ----------------------------------------------------------------------------------


def test_backoff_grows_to_the_cap_with_jitter_below_it() -> None:
    b = Backoff(0.5, 8.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    caps = [min(8.0, 0.5 * 2**i) for i in range(10)]
    assert all(cap * 0.5 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    b.reset()
    assert b.next_delay() <= 0.5


@pytest.mark.parametrize("kwargs", [{"initial_s": 0}, {"initial_s": 5, "max_s": 1}, {"jitter": 2}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)  # type: ignore[arg-type]


# -- supervisor -------------------------------------------------------------------------------


async def test_supervisor_restarts_with_backoff_on_the_injected_clock() -> None:
    clock = VirtualClock()
    sup = Supervisor(clock)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(clock.monotonic())
        if len(runs) < 3:
            raise TransientError("device gone")

    task = asyncio.ensure_future(
        sup.supervise(ChildSpec("src", "source", flaky, backoff_initial_s=1, backoff_max_s=4))
    )

    def state() -> ChildState:
        return sup.status["src"].state

    await clock.advance(0)
    assert len(runs) == 1 and state() is ChildState.BACKOFF
    await clock.advance(10)
    await asyncio.wait_for(task, 1)
    assert len(runs) == 3
    assert sup.status["src"].restarts == 2
    assert state() is ChildState.STOPPED
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert 0.5 <= gaps[0] <= 1.0 and 1.0 <= gaps[1] <= 2.0


async def test_permanent_error_stops_without_restart() -> None:
    sup = Supervisor(VirtualClock())

    async def broken() -> None:
        raise PermanentError("bad register map", hint="fix the profile")

    await sup.supervise(ChildSpec("src", "source", broken))
    assert sup.status["src"].state is ChildState.FAILED
    assert not sup.healthy()


async def test_never_policy_runs_once_and_a_bug_does_not_escape() -> None:
    sup = Supervisor(VirtualClock())
    calls = 0

    async def buggy() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    await sup.supervise(ChildSpec("app", "app", buggy, restart=RestartPolicy.NEVER))
    assert calls == 1
    assert "KeyError" in (sup.status["app"].last_error or "")


async def test_cancellation_is_not_swallowed() -> None:
    sup = Supervisor(VirtualClock())

    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.ensure_future(sup.supervise(ChildSpec("x", "source", forever)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.status["x"].state is ChildState.STOPPED


async def test_run_until_stops_children_when_asked() -> None:
    sup = Supervisor(VirtualClock())
    stop = asyncio.Event()

    async def forever() -> None:
        await asyncio.Event().wait()

    runner = asyncio.ensure_future(
        sup.run_until([ChildSpec("a", "source", forever), ChildSpec("b", "source", forever)], stop)
    )
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(runner, 1)
    assert {s.state for s in sup.status.values()} == {ChildState.STOPPED}


async def test_run_until_stops_a_child_whose_wait_for_lost_the_cancel() -> None:
    """On Python 3.11, asyncio.wait_for returns the reply when the cancel lands in the same loop
    turn (CPython gh-86296): the child polls on. run_until cancels it again until it ends."""
    sup = Supervisor(VirtualClock())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    polls = 0

    async def poller() -> None:  # a Modbus poll loop: one wait_for per reply
        nonlocal polls
        while True:
            reply: asyncio.Future[bytes] = loop.create_future()
            if polls == 3:  # the reply and the stop arrive in the same loop turn

                def together(r: asyncio.Future[bytes] = reply) -> None:
                    r.set_result(b"ok")
                    stop.set()

                loop.call_soon(together)
            else:
                loop.call_soon(reply.set_result, b"ok")
            polls += 1
            await asyncio.wait_for(reply, 10)
            await asyncio.sleep(0.01)

    runner = asyncio.ensure_future(sup.run_until([ChildSpec("modbus", "source", poller)], stop))
    async with asyncio.timeout(10):  # a deadline for a hang, not a speed check
        await runner
    assert sup.status["modbus"].state is ChildState.STOPPED
    assert polls > 3


# -- availability -----------------------------------------------------------------------------


def test_availability_reports_each_change_once() -> None:
    a = Availability(threshold=2, started_at=0.0)
    assert a.success(1.0) is None
    assert a.failure(2.0, "timeout") is None
    change = a.failure(3.0, "timeout")
    assert change is not None and change.state == "unavailable" and change.since == 1.0
    assert all(a.failure(t, "timeout") is None for t in (4.0, 5.0, 6.0))
    back = a.success(7.0)
    assert (
        back is not None
        and back.state == "recovered"
        and back.failed_polls == 5
        and back.since == 2.0
    )
    assert a.success(8.0) is None
    assert a.health is Health.UP


def test_never_seen_device_becomes_unavailable() -> None:
    a = Availability(threshold=1, started_at=10.0)
    change = a.failure(11.0, "connection refused")
    assert change is not None and change.since == 10.0
