"""Configuration of the ``coap`` source: CoAP sensors read by GET polling or Observe (pydantic
only, so ``check-config`` works without aiocoap installed)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge.config.base import CheckContext, PluginConfig, PointInfo, SourceCatalog, StrictModel
from protocols.envelope import Ident

PayloadFormat = Literal["auto", "senml+json", "senml+cbor", "json", "text"]


class CoapPointConfig(StrictModel):
    name: Ident = Field(description="Point name in the gateway (e.g. 'pm2_5')")
    key: str | None = Field(
        default=None,
        description="SenML record name (its end after the base name) or JSON key; default: name",
    )
    unit: str | None = Field(default=None, description="Unit, when the payload gives none")
    scale: float = Field(default=1.0, description="Engineering value = payload value * scale")


class CoapDeviceConfig(StrictModel):
    name: Ident = Field(description="Device id, unique within the site; used in topics and events")
    uri: str = Field(description="Resource to read, e.g. coap://192.0.2.7/air (port 5683 default)")
    observe: bool = Field(
        default=False,
        description="Subscribe with Observe (RFC 7641) instead of polling; re-registered when "
        "notifications stop for max_silence_s",
    )
    poll_interval_s: float = Field(
        default=10.0, gt=0, le=86400, description="Seconds between GETs (polling)"
    )
    max_silence_s: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="Observe: with no notification for this long the device counts as failed "
        "and the observation is registered again",
    )
    format: PayloadFormat = Field(
        default="auto",
        description="Payload: senml+json, senml+cbor, json (flat object), text (one number), "
        "or auto (by the response's Content-Format)",
    )
    points: list[CoapPointConfig] = Field(
        default_factory=list,
        description="Points to keep (renamed, scaled); empty: every numeric or boolean value",
    )

    @field_validator("uri")
    @classmethod
    def _coap_uri(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("coap", "coap+tcp") or not parts.hostname:
            raise ValueError("uri must look like coap://host[:port]/path")
        return v

    @model_validator(mode="after")
    def _text_has_one_point(self) -> CoapDeviceConfig:
        if self.format == "text" and len(self.points) != 1:
            raise ValueError("format text carries one number: name it with exactly one point")
        names = [p.name for p in self.points]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"point {dup[0]!r} is defined twice")
        return self


class CoapSourceConfig(PluginConfig):
    """Read CoAP sensors (GET polling or Observe); SenML JSON/CBOR, JSON or text payloads;
    availability reported once per change."""

    type: Literal["coap"] = Field(description="Plug-in type")
    timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Deadline for one request, retransmissions included"
    )
    retries: int = Field(
        default=1, ge=0, le=10, description="New requests after a timed-out one, in the same poll"
    )
    unavailable_after: int = Field(
        default=2, ge=1, le=100, description="Consecutive failed polls before 'unavailable'"
    )
    devices: list[CoapDeviceConfig] = Field(min_length=1, description="CoAP devices")

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        found = SourceCatalog()
        for dev in self.devices:
            found.devices[dev.name] = {p.name: PointInfo(unit=p.unit) for p in dev.points}
            if not dev.points:
                found.incomplete.add(dev.name)  # points are known only once it answers
        return found
