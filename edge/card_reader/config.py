"""Configuration of the ``card_reader`` source (pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.config.base import CheckContext, PluginConfig, SourceCatalog
from protocols.envelope import Ident


class CardReaderConfig(PluginConfig):
    """A card reader with keypad (Wiegand 26/34 cards, 4/8-bit keys) behind a Wiegand-to-RS-485
    interface: on a serial line, or on TCP through a serial device server."""

    type: Literal["card_reader"] = Field(description="Plug-in type")
    reader: Ident = Field(description="Device id of the reader (apps name it in readers.names)")
    transport: Literal["tcp", "serial"] = Field(
        description="tcp: a serial device server (host, port); serial: a local line (device)"
    )
    host: str | None = Field(default=None, description="tcp: the device server's address")
    port: int | None = Field(default=None, ge=1, le=65535, description="tcp: its port")
    device: Path | None = Field(default=None, description="serial: e.g. /dev/ttyUSB0")
    baudrate: int = Field(
        default=9600,
        description="serial: bits per second (8N1)",
        json_schema_extra={"enum": [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]},
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Deadline to connect or open the line"
    )
    pin_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="Keys typed more than this apart start a new PIN (a half-typed PIN is "
        "forgotten)",
    )
    max_pin_digits: int = Field(
        default=12, ge=4, le=16, description="More digits before '#' discard the entry"
    )

    @model_validator(mode="after")
    def _transport(self) -> CardReaderConfig:
        if self.transport == "tcp" and (self.host is None or self.port is None):
            raise ValueError("transport tcp needs host and port")
        if self.transport == "serial" and self.device is None:
            raise ValueError("transport serial needs device (e.g. /dev/ttyUSB0)")
        if self.baudrate not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
            raise ValueError("baudrate: 1200, 2400, 4800, 9600, 19200, 38400, 57600 or 115200")
        return self

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        return SourceCatalog(devices={self.reader: {}})
