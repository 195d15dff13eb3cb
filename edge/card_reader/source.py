"""Source ``card_reader``: Wiegand frames from a reader and keypad, as cards and PINs.

The reader's Wiegand interface sends one frame per line (:mod:`protocols.wiegand`), over a
serial line (RS-485 adapter, 8N1) or a serial device server on TCP. This source owns that
transport, decodes each line and puts a :class:`~edge.readings.Credential` into the gateway's
credentials channel, which goes only to the apps that follow this reader — never into
telemetry, never into a log line (a card number or PIN is a key to a door).

- A card (26 or 34 bits) is one credential ``FACILITY:NUMBER``.
- Keys make a PIN: digits collect until ``#`` (then one credential), ``*`` clears, a pause of
  more than ``pin_timeout_s`` or more than ``max_pin_digits`` digits forgets the entry.
- A line that is not a frame (noise on the bus, a parity error, an over-long line) is counted
  and skipped, and forgets a half-typed PIN (a key may have been lost in it); the first of a
  run is logged, without its content.

The connection's end (EOF, a reset, a deadline) is a :class:`ReaderError` (transient): the
supervisor reconnects with backoff, and a half-typed PIN is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty
from typing import Final

from edge.card_reader.config import CardReaderConfig
from edge.errors import TransientError
from edge.plugin import Plugin, ReportsHealth, SourceContext
from edge.readings import Credential
from protocols.errors import DecodeError
from protocols.wiegand import KEY_HASH, KEY_STAR, MAX_LINE_BYTES, Card, Key, decode_line

log = logging.getLogger(__name__)

_BAUD: Final = {
    1200: termios.B1200,
    2400: termios.B2400,
    4800: termios.B4800,
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
}


class ReaderError(TransientError):
    code = "CE300"


class PinEntry:
    """Keys into PINs (see the module docstring); times on the monotonic clock."""

    def __init__(self, timeout_s: float, max_digits: int) -> None:
        self.timeout_s = timeout_s
        self.max_digits = max_digits
        self._digits: list[str] = []
        self._last = -float("inf")
        self.discarded = 0

    def forget(self) -> None:
        """Forget a half-typed PIN (noise on the line may have eaten a key)."""
        if self._digits:
            self._digits.clear()
            self.discarded += 1

    def key(self, key: Key, now: float) -> str | None:
        """The PIN when ``key`` is ``#`` ending one, else None."""
        if now - self._last > self.timeout_s and self._digits:
            self._digits.clear()
            self.discarded += 1
        self._last = now
        if key.value == KEY_STAR:
            self._digits.clear()
            return None
        if key.value == KEY_HASH:
            pin, self._digits = "".join(self._digits), []
            return pin or None
        self._digits.append(key.char)
        if len(self._digits) > self.max_digits:
            self._digits.clear()
            self.discarded += 1
        return None


class CardReaderSource(Plugin, ReportsHealth):
    def __init__(self, config: CardReaderConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.pins = PinEntry(config.pin_timeout_s, config.max_pin_digits)
        self.counts = {"cards": 0, "pins": 0, "bad_frames": 0, "dropped": 0}
        self._bad_run = 0
        self.connected = False

    def health(self) -> list[str]:
        return [] if self.connected else [f"reader {self.config.reader} is not connected"]

    def notices(self) -> list[str]:
        return []

    async def _open(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter | asyncio.BaseTransport]:
        c = self.config
        limit = MAX_LINE_BYTES * 4
        try:
            async with asyncio.timeout(c.connect_timeout_s):
                if c.transport == "tcp":
                    assert c.host is not None
                    assert c.port is not None
                    # the writer is kept: dropping it would close the connection
                    return await asyncio.open_connection(c.host, c.port, limit=limit)
                assert c.device is not None
                return await self._open_serial(str(c.device), limit)
        except (OSError, TimeoutError) as err:
            where = f"{c.host}:{c.port}" if c.transport == "tcp" else str(c.device)
            raise ReaderError(
                f"reader {c.reader}: cannot open {where}: {err or 'no answer in time'}",
                hint="check the reader interface's power, address and cable",
            ) from None

    async def _open_serial(
        self, device: str, limit: int
    ) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = _BAUD[self.config.baudrate]  # ispeed, ospeed; 8N1 from raw
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (OSError, termios.error) as err:
            os.close(fd)
            raise OSError(f"not a serial line: {err}") from None
        reader = asyncio.StreamReader(limit=limit)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        return reader, transport

    async def run(self) -> None:
        c = self.config
        reader, transport = await self._open()
        self.connected = True
        log.info("reader %s: connected (%s)", c.reader, c.transport)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    await reader.read(MAX_LINE_BYTES * 4)  # skip the noise, keep reading
                    self._bad("an over-long line")
                    continue
                except asyncio.IncompleteReadError:
                    raise ReaderError(
                        f"reader {c.reader}: the connection closed",
                        hint="the interface restarted or the cable was pulled",
                    ) from None
                await self.feed(line)
        except ConnectionError as err:
            raise ReaderError(f"reader {c.reader}: {err}") from None
        finally:
            self.connected = False
            transport.close()

    def _bad(self, what: str) -> None:
        self.pins.forget()  # a key may be lost in the noise: never splice two halves of a PIN
        self.counts["bad_frames"] += 1
        self._bad_run += 1
        if self._bad_run == 1:  # the first of a run; never the line itself
            log.warning(
                "reader %s: skipped %s (noise or a wiring fault?)", self.config.reader, what
            )

    async def feed(self, line: bytes) -> None:
        """One line from the interface."""
        if not line.strip():
            return
        try:
            frame = decode_line(line)
        except DecodeError as err:
            self._bad(f"a line that is not a frame ({str(err).split(',')[0][:60]})")
            return
        self._bad_run = 0
        clock = self.ctx.clock
        if isinstance(frame, Card):
            kind, value = "card", frame.credential()
        else:
            pin = self.pins.key(frame, clock.monotonic())
            if pin is None:
                return
            kind, value = "pin", pin
        self.counts["cards" if kind == "card" else "pins"] += 1
        presented = Credential(self.config.reader, kind, value, clock.time(), clock.monotonic())
        if not await self.ctx.credentials.put(presented):
            self.counts["dropped"] += 1
            log.warning("reader %s: a %s was dropped (the gate is busy)", self.config.reader, kind)
