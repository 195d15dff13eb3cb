"""Configuration of the ``mqtt`` sink, and the broker connection it shares with the ``mqtt``
source (pydantic only)."""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edge.config.base import PluginConfig, StrictModel
from protocols import ed25519
from protocols.signed import unb64url


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


Overflow = Literal["drop_oldest", "drop_newest"]


class OutboxConfig(StrictModel):
    """Where envelopes wait for the broker's acknowledgement: an SQLite (WAL) file."""

    path: Path | None = Field(
        default=None,
        description="Outbox file; relative to the site file's folder (default "
        "'cityedge-state/outbox-<sink name>.db')",
    )
    budget_bytes: int = Field(
        default=256 * 2**20,
        ge=64 * 1024,
        le=2**40,
        description="Disk budget of the envelopes held; over it telemetry is dropped first, "
        "events and alarms last (every drop is counted)",
    )
    durability: Literal["group", "fsync"] = Field(
        default="group",
        description="'group': commit (with fsync) every group_commit_ms; 'fsync': commit with "
        "fsync as soon as anything waits",
    )
    group_commit_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Group commit interval: a crash or power cut loses at most this many "
        "milliseconds of envelopes (plus one fsync); none of them was published",
    )
    hold_backlog: int = Field(
        default=5_000,
        ge=0,
        le=10_000_000,
        description="Back pressure while connected: once this many more envelopes wait than "
        "the fewest since the link came up, the sources wait (pollers miss slots, counted) "
        "until the broker catches up; never while the link is down; 0: never",
    )
    telemetry_overflow: Overflow = Field(
        default="drop_oldest", description="Which telemetry goes first over the budget"
    )
    event_overflow: Overflow = Field(
        default="drop_oldest",
        description="Which events go over the budget, once no telemetry is left",
    )
    wal_limit_bytes: int = Field(
        default=8 * 2**20,
        ge=64 * 1024,
        le=2**32,
        description="The write-ahead log is checkpointed and truncated to about this size; "
        "as much is kept free beside the outbox for a full disk ('<outbox>.reserve')",
    )


class CommandsConfig(StrictModel):
    """Who may command this gateway: Ed25519 public keys by key id."""

    keys: dict[str, str] = Field(
        default_factory=dict,
        description="Key id -> raw Ed25519 public key (32 bytes, base64url, as "
        "'cityedge command-key' prints it); all-zero, small-order and other weak keys are "
        "refused; no keys: every command is refused",
    )
    max_ttl_s: int = Field(
        default=3600, ge=1, le=86_400, description="Refuse commands valid for longer than this"
    )
    rollback_after_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="config.apply: restore the previous site file unless the link to the "
        "broker is back within this time",
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for kid, text in v.items():
            try:
                raw = unb64url(text)
            except (ValueError, binascii.Error):
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    f"key {kid!r}: expected 32 bytes in base64url (the raw Ed25519 public key)"
                )
            problem = ed25519.key_problem(raw)
            if problem is not None:
                raise ValueError(f"key {kid!r} is refused: {problem}; {ed25519.RULE}")
        return v


class MqttConnectionConfig(PluginConfig):
    """The broker connection of the ``mqtt`` plug-ins (the sink and the node source), declared
    once; :func:`edge.mqtt_sink.sink.link_settings` turns it into the link's settings."""

    type: Literal["mqtt"] = Field(description="Plug-in type")
    host: str = Field(description="Broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 for TLS)")
    endpoints: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="More brokers as 'host:port' (the other nodes of a cluster, e.g. NATS): "
        "after a failed attempt or a lost connection the next is tried, in turn, and the "
        "persistent session resumes there",
    )
    client_id: str | None = Field(
        default=None,
        max_length=128,
        description="MQTT client id (default '<site>-<gateway>'; the mqtt source adds '-nodes')",
    )
    username: str | None = Field(default=None, description="User name, if the broker needs one")
    password: SecretStr | None = Field(default=None, description="Password; use ${ENV} or !secret")
    tls: TlsConfig | None = Field(
        default=None,
        description="TLS settings (the CA, this gateway's certificate); omit for plain TCP",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="MQTT version; auto tries 5 and falls back to 3.1.1"
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"endpoint {item!r}: expected host:port, e.g. 10.0.0.2:1883")
        return value

    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Deadline to connect")
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60, description="First reconnect wait")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest reconnect wait"
    )


class MqttSinkConfig(MqttConnectionConfig):
    """Publish envelopes to an MQTT broker at QoS 1, reconnecting with backoff."""

    qos: Literal[0, 1] = Field(default=1, description="QoS of publishes (1: at least once)")
    max_inflight: int = Field(
        default=100,
        ge=1,
        le=65535,
        description="Unacknowledged publishes at most (and <= broker's)",
    )
    wait_for_ingest: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Ingest group to wait for: publish only while one of its workers sends live "
        "heartbeats, else keep envelopes in the outbox (none: publish whenever connected)",
    )
    outbox: OutboxConfig = Field(
        default_factory=lambda: OutboxConfig(),
        description="The durable outbox every envelope is stored in before it is published",
    )
    commands: CommandsConfig = Field(
        default_factory=lambda: CommandsConfig(),
        description="Signed downlink commands on this gateway's cmd/req topic",
    )
