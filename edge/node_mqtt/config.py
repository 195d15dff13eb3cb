"""Configuration of the ``mqtt`` source: sensor nodes reporting to the site's local broker
(pydantic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.config.base import CheckContext, PointInfo, SourceCatalog, StrictModel
from edge.mqtt_sink.config import MqttConnectionConfig
from protocols import nodewire
from protocols.envelope import Ident

NodeKind = Literal["bin-fill", "water", "gate-relay"]
WRITABLE = frozenset({("gate-relay", "relay_on")})  # (kind, point) apps may write, with commands


class MqttNodeConfig(StrictModel):
    name: Ident = Field(description="Node id (its MQTT client id and topic level); the device name")
    kind: NodeKind = Field(description="What the node is: bin-fill, water or gate-relay")


class NodeCommandsConfig(StrictModel):
    """Commands to gate-relay nodes (apps' writes to ``relay_on``), signed with this gateway's
    command key; the nodes obey it because the site delegated it to this gateway."""

    key_file: Path = Field(
        description="The gateway's command key (Ed25519, PEM, keep it 0600): 'command.key' from "
        "'cityedge provision gateway'"
    )
    delegation_file: Path = Field(
        description="The site's delegation of that key to this gateway: "
        "'command-delegation.json' beside it"
    )
    reply_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Deadline for the node's reply to a command"
    )
    readback_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Deadline, after the node's reply, for its report that reads the relay back",
    )
    command_ttl_s: int = Field(
        default=60,
        ge=5,
        le=300,
        description="How long a signed command stays valid (nodes refuse more than 300 s)",
    )


class MqttSourceConfig(MqttConnectionConfig):
    """Readings from MicroPython sensor nodes over the site's local MQTT broker."""

    # the broker connection is the mqtt sink's (MqttConnectionConfig); only the port's default
    # differs: the site's local broker is reached over TLS
    port: int = Field(
        default=8883, ge=1, le=65535, description="Broker port (8883: the site's broker uses TLS)"
    )
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
    commands: NodeCommandsConfig | None = Field(
        default=None,
        description="Let apps drive gate-relay nodes (point relay_on, read back from the node's "
        "report); none: the nodes are read-only",
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
                p: PointInfo(
                    unit=nodewire.POINTS[nodewire.POINT_IDS[p]][1],
                    writable=self.commands is not None and (node.kind, p) in WRITABLE,
                )
                for p in nodewire.KIND_POINTS[node.kind]
            }
        return found
