"""The card_reader source against the reader simulator: over TCP (a serial device server) and
over a real serial line (a socat pty pair); cards, PINs, noise, and the connection's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.card_reader.config import CardReaderConfig
from edge.card_reader.source import CardReaderSource, PinEntry, ReaderError
from edge.channel import Channel, Overflow
from edge.clock import SystemClock
from edge.config.base import CheckContext
from edge.metrics import GatewayMetrics
from edge.plugin import Emitter, SourceContext
from edge.readings import Credential, ReadingBatch
from protocols.wiegand import Key
from sim.devices.card_reader import serve
from sim.localsite import PtyPair, free_port, start_pty_pair


def context(credentials: Channel[Credential]) -> SourceContext:
    clock, metrics = SystemClock(), GatewayMetrics()

    async def deliver(_e: Any) -> None:
        return None

    return SourceContext(
        name="reader",
        site="s",
        gateway="g",
        clock=clock,
        metrics=metrics,
        emitter=Emitter("s", "g", clock, deliver, metrics),
        check=CheckContext(Path(".")),
        readings=Channel[ReadingBatch]("readings", 10),
        credentials=credentials,
    )


@contextlib.asynccontextmanager
async def simulator(serial: str | None = None) -> AsyncIterator[tuple[int, int]]:
    port, control = free_port(), free_port()
    task = asyncio.create_task(serve("127.0.0.1", None if serial else port, control, serial))
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", control)
            w.close()
            break
        await asyncio.sleep(0.05)
    try:
        yield port, control
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def present(control: int, what: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"http://127.0.0.1:{control}/{what}", json=body, timeout=aiohttp.ClientTimeout(10)
        )
        assert r.status == 200, await r.text()


async def take(ch: Channel[Credential], n: int) -> list[tuple[str, str, str]]:
    got = []
    for _ in range(n):
        c = await asyncio.wait_for(ch.get(), 10)
        got.append((c.reader, c.kind, c.value))
    return got


async def exercise(source: CardReaderSource, ch: Channel[Credential], control: int) -> None:
    await present(control, "card", {"card": "12:34567"})
    await present(control, "line", {"line": "W26:0000000"})  # a parity error: skipped
    await present(control, "line", {"line": "\u00ff garbage"})
    await present(control, "keys", {"keys": "12*480613#", "gap_s": 0.01})  # '*' clears "12"
    await present(control, "keys", {"keys": "7", "bits": 8})
    await present(control, "card", {"facility": 1234, "number": 5, "bits": 34})
    assert await take(ch, 3) == [
        ("door-1", "card", "12:34567"),
        ("door-1", "pin", "480613"),
        ("door-1", "card", "1234:5"),
    ]
    assert source.counts["bad_frames"] == 2 and source.counts["pins"] == 1
    assert "480613" not in repr(Credential("door-1", "pin", "480613", 0, 0))


@contextlib.asynccontextmanager
async def connected_source() -> AsyncIterator[
    tuple[CardReaderSource, Channel[Credential], int, asyncio.Task[None]]
]:
    """The source on TCP to a fresh simulator, connected: its channel, the simulator's control
    port and the source's task, which ends (a ReaderError) when the simulator has gone."""
    run: asyncio.Task[None] | None = None
    try:
        async with simulator() as (port, control):
            cfg = CardReaderConfig(
                type="card_reader",
                name="r",
                reader="door-1",
                transport="tcp",
                host="127.0.0.1",
                port=port,
            )
            ch: Channel[Credential] = Channel("credentials", 16, Overflow.DROP_NEWEST)
            source = CardReaderSource(cfg, context(ch))
            run = asyncio.create_task(source.run())
            for _ in range(100):
                if source.connected:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the simulator registers the client
            yield source, ch, control, run
    finally:
        if run is not None:
            with contextlib.suppress(ReaderError):
                await asyncio.wait_for(run, 10)


async def test_cards_and_pins_over_tcp_and_the_end_of_the_connection() -> None:
    async with connected_source() as (source, ch, control, run):
        await exercise(source, ch, control)
    error = run.exception()  # the server went away
    assert isinstance(error, ReaderError) and re.search(r"closed|reset", str(error)), error
    assert source.health() == ["reader door-1 is not connected"]


MALFORMED = [
    {"line": "W26:0000000"},  # a card with a wrong parity bit
    {"line": "W34:1"},  # too few hex digits for its bits
    {"line": "W37:0000000000"},  # a frame length no reader sends
    {"line": "W8:BB"},  # a key whose check nibble is wrong
    {"line": "W4:C"},  # a 4-bit value that is no key
    {"raw_hex": "00ff13fe800d0a"},  # binary noise, ending in CR LF
    {"raw_hex": "57323a" + "41" * 300 + "0a"},  # an over-long line (a stuck data line)
    {"line": "card 12:34567"},  # text, not a frame: never taken as the card it names
]


async def test_malformed_frames_are_counted_skipped_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Noise on the bus: no credential comes of it, the good frames around it still do, its
    content is never logged, and a half-typed PIN is forgotten (a key may be lost in it)."""
    caplog.set_level(logging.DEBUG)
    async with connected_source() as (source, ch, control, _):
        await present(control, "card", {"card": "7:4242"})
        for bad in MALFORMED:
            await present(control, "line", bad)
        await present(control, "keys", {"keys": "480", "gap_s": 0.01})
        await present(control, "line", {"line": "W26:0000000"})  # noise mid-PIN
        await present(control, "keys", {"keys": "613#", "gap_s": 0.01})  # not "480613"
        await present(control, "keys", {"keys": "135790#", "gap_s": 0.01})
        await present(control, "card", {"card": "12:34567"})
        assert await take(ch, 4) == [
            ("door-1", "card", "7:4242"),
            ("door-1", "pin", "613"),  # what was typed after the noise only, not "480613"
            ("door-1", "pin", "135790"),
            ("door-1", "card", "12:34567"),
        ]
    assert source.counts["bad_frames"] >= len(MALFORMED) + 1
    assert source.counts["cards"] == 2
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("edge."))
    assert "skipped" in logged
    for secret in ("4242", "34567", "480", "613", "135790", "AAAA", "card 12"):
        assert secret not in logged, secret


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    pair = start_pty_pair(tmp_path)
    yield pair
    pair.stop()


async def test_cards_and_pins_over_a_serial_line(pty: PtyPair) -> None:
    async with simulator(serial=pty.a) as (_, control):
        cfg = CardReaderConfig(
            type="card_reader", name="r", reader="door-1", transport="serial", device=Path(pty.b)
        )
        ch: Channel[Credential] = Channel("credentials", 16, Overflow.DROP_NEWEST)
        source = CardReaderSource(cfg, context(ch))
        run = asyncio.create_task(source.run())
        await asyncio.sleep(0.2)
        await exercise(source, ch, control)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def test_a_reader_that_cannot_be_reached_is_a_transient_error() -> None:
    cfg = CardReaderConfig(
        type="card_reader",
        name="r",
        reader="door-1",
        transport="tcp",
        host="127.0.0.1",
        port=free_port(),
    )
    ch: Channel[Credential] = Channel("credentials", 16, Overflow.DROP_NEWEST)
    with pytest.raises(ReaderError, match=r"cannot open 127\.0\.0\.1"):
        await CardReaderSource(cfg, context(ch)).run()


def test_pin_entry_forgets_a_pause_and_an_overlong_entry() -> None:
    pins = PinEntry(timeout_s=10, max_digits=6)
    for i, d in enumerate("1234"):
        assert pins.key(Key(int(d)), i) is None
    assert pins.key(Key(5), 100) is None  # 96 s later: "1234" is forgotten
    assert pins.key(Key(11), 101) == "5"
    for d in "1234567":
        pins.key(Key(int(d)), 102)
    assert pins.key(Key(11), 102) is None and pins.discarded == 2  # 7 digits: discarded
    assert pins.key(Key(11), 103) is None  # '#' alone is no PIN


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"transport": "tcp"}, "host and port"),
        ({"transport": "serial"}, "needs device"),
        ({"transport": "serial", "device": "/dev/ttyS0", "baudrate": 1000}, "baudrate"),
    ],
)
def test_config_names_what_is_missing(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CardReaderConfig.model_validate(
            {"type": "card_reader", "name": "r", "reader": "d", **fields}
        )
