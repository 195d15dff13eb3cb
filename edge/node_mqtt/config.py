"""Configuration of the ``mqtt`` source: sensor nodes reporting to the site's local broker
(pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from edge.config.base import CheckContext, PluginConfig, PointInfo, SourceCatalog, StrictModel
from edge.mqtt_sink.config import TlsConfig
from protocols import nodewire
from protocols.envelope import Ident

NodeKind = Literal["bin-fill", "water", "gate-relay"]


class MqttNodeConfig(StrictModel):
    name: Ident = Field(description="Node id (its MQTT client id and topic level); the device name")
    kind: NodeKind = Field(description="What the node is: bin-fill, water or gate-relay")


class MqttSourceConfig(PluginConfig):
    """Readings from MicroPython sensor nodes over the site's local MQTT broker."""

    type: Literal["mqtt"] = Field(description="Plug-in type")
    host: str = Field(description="Local broker host name or address")
    port: int = Field(default=8883, ge=1, le=65535, description="Broker port (8883 for TLS)")
    client_id: str | None = Field(
        default=None,
        max_length=128,
        description="MQTT client id (default '<site>-<gateway>-nodes')",
    )
    username: str | None = Field(default=None, description="User name, if the broker needs one")
    password: SecretStr | None = Field(default=None, description="Password; use ${ENV} or !secret")
    tls: TlsConfig | None = Field(
        default=None, description="TLS settings (the gateway's certificate from the site CA)"
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="MQTT version; auto tries 5 and falls back to 3.1.1"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive in seconds")
    session_expiry_s: int = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        description=(
            "How long the broker keeps the gateway's subscription and queues node frames for it "
            "while the gateway is away (a persistent session; give the broker 'persistence true' "
            "to keep it across a broker restart); 0 = a clean session, frames sent meanwhile lost"
        ),
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Deadline to connect")
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60, description="First reconnect wait")
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest reconnect wait"
    )
    node_site: Ident | None = Field(
        default=None, description="Site level of the node topics (default: this site's id)"
    )
    max_clock_skew_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="A node time further than this from the gateway's is replaced by arrival time",
    )
    dedupe_window: int = Field(
        default=64,
        ge=0,
        le=10_000,
        description="Recent frames per node remembered to drop repeats after a reconnect",
    )
    nodes: list[MqttNodeConfig] = Field(
        min_length=1, description="Nodes accepted from this broker (others are ignored, counted)"
    )

    def catalog(self, ctx: CheckContext) -> SourceCatalog:
        found = SourceCatalog()
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.name in seen:
                found.problems.append((("nodes", i, "name"), f"node {node.name!r} is listed twice"))
            seen.add(node.name)
            found.devices[node.name] = {
                p: PointInfo(unit=nodewire.POINTS[nodewire.POINT_IDS[p]][1])
                for p in nodewire.KIND_POINTS[node.kind]
            }
        return found
