"""The plug-in's Modbus TCP client against a device that misbehaves on a real loopback socket:
it answers requests out of order, or one of them after its deadline. Each request must get its
own reply (matched by transaction id), never another's; a late reply is dropped and counted."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from edge.modbus.client import NoReply, TcpLine
from protocols.modbus_wire import ReadReply, Request, encode_mbap, encode_reply

MBAP = struct.Struct(">HHHB")
Frame = tuple[int, int, bytes]  # transaction, unit, request PDU
Behaviour = Callable[[list[Frame], asyncio.StreamWriter], None]


def answer(frame: Frame) -> bytes:
    """The reply to a one-register holding read: the register holds its own address."""
    tid, unit, pdu = frame
    address = int.from_bytes(pdu[1:3], "big")
    return encode_mbap(tid, unit, encode_reply(ReadReply(3, address.to_bytes(2, "big"))))


@contextlib.asynccontextmanager
async def device(behaviour: Behaviour) -> AsyncIterator[int]:
    """A Modbus TCP device on a free loopback port; ``behaviour`` sees every request received
    so far (and answers, or not)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[Frame] = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _proto, length, unit = MBAP.unpack(await reader.readexactly(MBAP.size))
                seen.append((tid, unit, await reader.readexactly(length - 1)))
                behaviour(seen, writer)
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def line(port: int) -> TcpLine:
    return TcpLine(
        "127.0.0.1",
        port,
        1,
        where=f"127.0.0.1:{port}",
        bus_hint="-",
        no_reply_hint="-",
        connect_timeout_s=2.0,
        reconnect_max_s=1.0,
    )


async def test_replies_in_reverse_order_reach_their_own_requests() -> None:
    def reverse_in_threes(seen: list[Frame], writer: asyncio.StreamWriter) -> None:
        if len(seen) % 3 == 0:
            for frame in reversed(seen[-3:]):
                writer.write(answer(frame))

    async with device(reverse_in_threes) as port:
        client = line(port)
        try:
            replies = await asyncio.gather(
                *(client.request(Request(1, 3, address, 1), 2.0) for address in (10, 20, 30))
            )
        finally:
            client.close()
    assert [r.registers() for r in replies if isinstance(r, ReadReply)] == [[10], [20], [30]]
    assert client.stray == 0


async def test_a_late_reply_is_dropped_not_given_to_the_next_request() -> None:
    def first_one_late(seen: list[Frame], writer: asyncio.StreamWriter) -> None:
        if len(seen) == 2:  # the first request's deadline has passed: its reply comes now
            writer.write(answer(seen[0]))
            writer.write(answer(seen[1]))

    async with device(first_one_late) as port:
        client = line(port)
        try:
            with pytest.raises(NoReply, match="no reply from unit 1"):
                await client.request(Request(1, 3, 10, 1), 0.2)
            second = await client.request(Request(1, 3, 20, 1), 2.0)
        finally:
            client.close()
    assert isinstance(second, ReadReply)
    assert second.registers() == [20]
    assert client.stray == 1


async def test_each_unanswered_request_expires_at_its_own_deadline() -> None:
    """Deadlines share one queue per connection: a silent unit's requests expire in order, a
    shorter deadline asked after a longer one still comes first, and answered requests in
    between are not touched."""

    def only_address_5(seen: list[Frame], writer: asyncio.StreamWriter) -> None:
        frame = seen[-1]
        if int.from_bytes(frame[2][1:3], "big") == 5:
            writer.write(answer(frame))

    async with device(only_address_5) as port:
        client = line(port)
        loop = asyncio.get_running_loop()
        ended: dict[str, float] = {}

        async def ask(name: str, address: int, timeout_s: float) -> object:
            t0 = loop.time()
            try:
                return await client.request(Request(1, 3, address, 1), timeout_s)
            except NoReply as err:
                return err
            finally:
                ended[name] = loop.time() - t0

        try:
            long, answered, short = await asyncio.gather(
                ask("long", 1, 1.5), ask("answered", 5, 1.5), ask("short", 2, 0.3)
            )
        finally:
            client.close()
    assert isinstance(long, NoReply) and isinstance(short, NoReply)
    assert isinstance(answered, ReadReply) and answered.registers() == [5]
    assert ended["short"] < ended["long"]  # not held behind the longer deadline queued first
    assert ended["long"] >= 1.5 and ended["short"] >= 0.3  # never before its deadline
