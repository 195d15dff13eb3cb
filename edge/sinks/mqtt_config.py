"""Configuration of the ``mqtt`` sink (pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from edge.config.base import PluginConfig, StrictModel


class TlsConfig(StrictModel):
    ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the broker's certificate"
    )
    cert_file: Path | None = Field(
        default=None, description="This gateway's client certificate (PEM)"
    )
    key_file: Path | None = Field(
        default=None, description="Private key of the client certificate (PEM)"
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the broker's certificate (testing only)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class MqttSinkConfig(PluginConfig):
    """Publish envelopes to an MQTT broker at QoS 1, reconnecting with backoff."""

    type: Literal["mqtt"] = Field(description="Plug-in type")
    host: str = Field(description="Broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS)")
    client_id: str | None = Field(
        default=None, max_length=128, description="MQTT client id (default '<site>-<gateway>')"
    )
    username: str | None = Field(default=None, description="User name, if the broker needs one")
    password: SecretStr | None = Field(default=None, description="Password; use ${ENV} or !secret")
    tls: TlsConfig | None = Field(default=None, description="TLS settings; omit for plain TCP")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="MQTT version; auto tries 5 and falls back to 3.1.1"
    )
    qos: Literal[0, 1] = Field(default=1, description="QoS of publishes (1: at least once)")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Deadline to connect")
    max_inflight: int = Field(
        default=100,
        ge=1,
        le=65535,
        description="Unacknowledged publishes at most (and <= broker's)",
    )
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60, description="First reconnect wait")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest reconnect wait"
    )
    buffer_capacity: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="Envelopes held in memory while the broker is away; beyond it telemetry is "
        "dropped oldest first (events and alarms last). Lost on restart until the outbox lands.",
    )
