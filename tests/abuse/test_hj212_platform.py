"""HJ 212 frames from the platform, wrong and hostile, into the ``hj212`` sink: no frame stops
the receiver (which ends the waits for answers), settings outside the site file's ranges are
refused with ExeRtn 3, and nothing the platform says is kept without bound."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.hj212_sink.sink import Hj212Sink
from protocols import hj212
from protocols.hj212 import Cn, Cp, FrameReader, Packet
from sim.localsite import free_port
from tests.abuse.fuzz import FUZZ, fuzz_input, run
from tests.edge.hj212_sink.test_hj212_sink import Uplink, platform, until

QN = "20260101120000000"


def frame(segment: str) -> bytes:
    """A frame around any data segment, with a right CRC (the codec refuses a wrong one)."""
    seg = segment.encode("ascii")
    return b"##%04d%s%04X\r\n" % (len(seg), seg, hj212.crc16(seg))


def command(cn: int, cp: str = "", pw: str = "123456", mn: str = "RIVER01") -> bytes:
    return frame(f"QN={QN};ST=91;CN={cn:04d};PW={pw};MN={mn};Flag=5;CP=&&{cp}&&")


# each of these stopped the receiver (an exception out of the frame handler): from then on no
# answer was read, so every message timed out and was given up
CRASHED = [
    (
        "QnRtn not a number",
        frame(f"QN={QN};ST=91;CN=9011;PW=123456;MN=RIVER01;Flag=4;CP=&&QnRtn=x&&"),
    ),
    (
        "QnRtn huge",
        frame(f"QN={QN};ST=91;CN=9011;PW=123456;MN=RIVER01;Flag=4;CP=&&QnRtn={'9' * 900}&&"),
    ),
    ("PW too long to repeat", command(1011, pw="1234567")),
    ("PW empty", command(1011, pw="")),
    ("MN too long to repeat", command(1011, mn="M" * 30)),
    ("MN with a space", command(1011, mn="RIVER 01")),
]


@contextlib.asynccontextmanager
async def hostile_platform(extra: bytes) -> AsyncIterator[int]:
    """A platform that sends ``extra`` before it answers each data message."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                frames.feed(data)
                for p in frames.events():
                    if isinstance(p, Packet) and p.wants_ack:
                        writer.write(extra + hj212.data_answer(p).encode())
                        await writer.drain()

    port = free_port()
    server = await asyncio.start_server(client, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("extra", [f for _, f in CRASHED], ids=[n for n, _ in CRASHED])
async def test_hostile_platform_frames_do_not_stop_the_answers(extra: bytes) -> None:
    async with hostile_platform(extra) as port, Uplink(port, resends=0, ack_timeout_s=2) as up:
        for ph in (7.0, 7.1, 7.2):
            await up.outbox.put(up.hour("river", ph=ph))
        await until(lambda: up.sink.sent + up.sink.unanswered >= 3, timeout_s=15)
        assert (up.sink.sent, up.sink.unanswered) == (3, 0)


@contextlib.asynccontextmanager
async def wired_sink(
    **overrides: object,
) -> AsyncIterator[tuple[Hj212Sink, FrameReader, socket.socket]]:
    """A sink whose answers go into a socket pair: the far end is read by the test."""
    up = Uplink(1, **overrides)
    near, far = socket.socketpair()
    _reader, writer = await asyncio.open_connection(sock=near)
    up.sink._writer = writer  # what _deliver sets when it connects
    far.setblocking(False)
    try:
        yield up.sink, FrameReader(), far
    finally:
        writer.close()
        far.close()


async def answers(frames: FrameReader, far: socket.socket) -> list[tuple[int, dict[str, str]]]:
    await asyncio.sleep(0)
    with contextlib.suppress(BlockingIOError):
        while data := far.recv(65536):
            frames.feed(data)
    return [(p.cn, dict(p.cp.items())) for p in frames.events() if isinstance(p, Packet)]


@pytest.mark.parametrize(
    ("cn", "cp"),
    [
        (1000, "OverTime=nan"),
        (1000, "OverTime=1e400"),
        (1000, "OverTime=-1"),
        (1000, "OverTime=0"),
        (1000, "OverTime=601"),
        (1000, "ReCount=-1"),  # range(0): every message given up unsent
        (1000, "ReCount=99999999999"),
        (1000, "ReCount=1.5"),
        (1000, "ReCount=x"),
        (1062, "RtdInterval=nan"),  # nan made the rate limit let everything through
        (1062, "RtdInterval=inf"),
        (1062, "RtdInterval=-5"),
        (1062, "RtdInterval=1e9"),
        (1062, ""),
    ],
)
async def test_settings_outside_the_site_file_ranges_are_refused(cn: int, cp: str) -> None:
    async with wired_sink(realtime_interval_s=30) as (sink, frames, far):
        before = (sink.ack_timeout_s, sink.resends, sink.realtime_interval_s)
        await sink.received(command(cn, cp))
        assert await answers(frames, far) == [(9011, {"QnRtn": "1"}), (9012, {"ExeRtn": "3"})]
        assert (sink.ack_timeout_s, sink.resends, sink.realtime_interval_s) == before


async def test_settings_within_the_ranges_are_taken() -> None:
    async with wired_sink() as (sink, frames, far):
        await sink.received(
            command(1000, "OverTime=10;ReCount=5") + command(1062, "RtdInterval=60")
        )
        assert (sink.ack_timeout_s, sink.resends, sink.realtime_interval_s) == (10.0, 5, 60.0)
        assert [a for a in await answers(frames, far) if a[0] == 9012] == [
            (9012, {"ExeRtn": "1"})
        ] * 2


async def test_a_command_that_cannot_be_answered_is_counted_not_answered() -> None:
    async with wired_sink() as (sink, frames, far):
        await sink.received(command(1011, mn="M" * 30) + b"garbage" + command(1011))
        assert sink.bad_frames == 2  # the garbage and the unanswerable command
        got = await answers(frames, far)
        assert (
            got[0] == (9011, {"QnRtn": "1"}) and len(got) == 3
        )  # the good one: QnRtn, time, ExeRtn


async def test_what_the_platform_sends_is_kept_within_bounds() -> None:
    async with wired_sink() as (sink, _frames, far):
        for _ in range(300):
            await sink.received(command(3999))
            with contextlib.suppress(BlockingIOError):
                while far.recv(65536):
                    pass
        assert len(sink.commands) == 100


async def test_an_unsendable_value_is_dropped_and_counted_not_a_crash() -> None:
    """A value of 1e300 is 300 digits in HJ 212 and fits no CP field: EncodeError escaped when
    the message came first in the queue, and the sink stopped."""
    async with platform(pw="123456") as (plat, port), Uplink(port) as up:
        await up.outbox.put(up.hour("river", ph=1e300))
        await up.outbox.put(up.hour("river", ph=7.0))
        await until(lambda: up.sink.sent == 1)
        assert [m.cp.pollutants()["w01001"]["Avg"] for m in plat.messages] == ["7"]
        assert up.sink.ctx.metrics.sink_dropped.labels("bureau", "unsendable")._value.get() == 1


SEEDS = [
    command(1000, "OverTime=10;ReCount=3"),
    command(1011),
    command(1061),
    command(1062, "RtdInterval=45"),
    command(2011),
    command(2012),
    hj212.data_answer(Packet(st=21, cn=2061, pw="123456", mn="RIVER01", qn=QN)).encode(),
    hj212.request_answer(Packet(st=21, cn=2061, pw="123456", mn="RIVER01", qn=QN), 3).encode(),
    hj212.Packet(
        st=91, cn=1011, pw="123456", mn="RIVER01", qn=QN, cp=Cp.of(SystemTime="20260101120000")
    ).encode(),
]


@FUZZ
@given(
    st.lists(
        fuzz_input(SEEDS, extra=[b"QnRtn=", b"OverTime=", b"CP=&&", b"ReCount="]),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_the_sink_handles_any_platform_bytes(chunks: list[bytes]) -> None:
    """The handler (not only the codec): any bytes, cut anywhere, raise nothing; the settings
    stay within the site file's ranges."""

    async def one() -> None:
        async with wired_sink() as (sink, _frames, _far):
            for chunk in chunks:
                await sink.received(chunk)
            assert 0 < sink.ack_timeout_s <= 600 and 0 <= sink.resends <= 20
            assert 0 <= sink.realtime_interval_s <= 86400

    run(one())


def test_cn_values_used_here_are_the_codec_s() -> None:
    assert (Cn.SET_TIMEOUT_RESEND, Cn.SET_RTD_INTERVAL, Cn.GET_TIME) == (1000, 1062, 1011)
