"""Apps drive gate-relay nodes through the ``mqtt`` source: a command signed with the gateway's
delegated key, the node's reply by nonce, the relay read back from its next report; refusals,
failures and silences map to the errors Modbus writes raise. The node here is a fake behind the
real interfaces: it checks each command as a node does (:func:`protocols.delegation.verify_command`)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.link import Message
from edge.actuators import ActuationError
from edge.clock import VirtualClock
from edge.config.base import CheckContext
from edge.errors import DeviceError
from edge.node_mqtt.commands import CommandKeyError, NodeNoReply
from edge.node_mqtt.config import MqttSourceConfig
from edge.node_mqtt.source import MqttSource
from protocols import delegation, nodewire, signed
from protocols.nodewire import Result
from tests.edge.node_mqtt.test_mqtt_source import NOW
from tests.edge.node_mqtt.test_mqtt_source import make as make_source
from tests.firmware.vectors import KEY

SITE_KEYS = {"ops-1": KEY.public_key()}


def key_files(
    tmp: Path, gateway: str = "gw-1", expires_at: int = int(NOW) + 86400, **kw: Any
) -> dict[str, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp / "command.key").write_bytes(pem)
    os.chmod(tmp / "command.key", 0o600)
    args: dict[str, Any] = {
        "site_key": KEY,
        "site_kid": "ops-1",
        "site": "riverside",
        "gateway": gateway,
        "gateway_key": key.public_key(),
        "expires_at": expires_at,
    }
    args.update(kw)
    (tmp / "command-delegation.json").write_bytes(delegation.issue(**args))
    return {
        "key_file": str(tmp / "command.key"),
        "delegation_file": str(tmp / "command-delegation.json"),
    }


def make(
    tmp: Path, commands: dict[str, Any] | None = None, clock: VirtualClock | None = None
) -> MqttSource:
    return make_source(
        clock=clock or VirtualClock(start_wall=NOW),
        commands=key_files(tmp) if commands is None else commands,
    )[0]


Behaviour = Callable[["FakeNode", signed.Verified | Exception, str], None]


class FakeNode:
    """gate-1 behind a fake link: checks each command as a node of ``gateway`` does, then
    answers as ``behave`` says (by default: switch, reply done, report the relay)."""

    def __init__(self, src: MqttSource, gateway: str | None = "gw-1") -> None:
        self.src = src
        self.gateway = gateway
        self.relay = False
        self.seq = 0
        self.sent: list[tuple[str, bytes]] = []
        self.out: list[Message] = []
        self.behave: Behaviour = FakeNode.obey
        self.link = self  # what the source's session offers

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.sent.append((topic, payload))
        nonce = json.loads(payload)["nonce"]
        try:
            got: signed.Verified | Exception = delegation.verify_command(
                payload,
                site_keys=SITE_KEYS,
                site="riverside",
                gateway=self.gateway,
                now=self.now(),
            )
        except (delegation.DelegationRefused, signed.SignatureRefused) as err:
            got = err
        self.behave(self, got, nonce)

    def now(self) -> int:
        return int(self.src.ctx.clock.time())

    def reply(self, nonce: str, result: Result, message: str) -> None:
        self.seq += 1
        frame = nodewire.encode_reply(self.seq, self.now(), nonce, result, message)
        self.out.append(Message(nodewire.node_topic("riverside", "gate-1", "res"), frame, 1, False))

    def report(self, relay: bool, at: int | None = None) -> None:
        self.seq += 1
        frame = nodewire.encode_readings(
            self.seq, self.now() if at is None else at, [("door_open", False), ("relay_on", relay)]
        )
        self.out.append(Message(nodewire.node_topic("riverside", "gate-1", "up"), frame, 1, False))

    def obey(self, got: signed.Verified | Exception, nonce: str) -> None:
        if isinstance(got, Exception):
            self.reply(nonce, Result.REFUSED, str(got)[:64])
            return
        action = json.loads(got.body)["action"]
        self.relay = action == "open"
        self.reply(nonce, Result.DONE, action)
        self.report(self.relay)

    async def deliver(self) -> None:
        """What the node published reaches the source, in order."""
        while self.out:
            await self.src.handle(self.out.pop(0))


async def drive(src: MqttSource, node: FakeNode, value: bool, settle_s: float = 0) -> Any:
    src._session = node  # type: ignore[assignment]
    clock = src.ctx.clock
    assert isinstance(clock, VirtualClock)
    task = asyncio.create_task(src.write("gate-1", "relay_on", value))
    await clock.advance(0)
    await node.deliver()
    if settle_s:
        await clock.advance(settle_s)
    return await task


async def test_the_relay_opens_and_reads_back(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)
    assert await drive(src, node, True) is True and node.relay is True
    assert await drive(src, node, False) is False and node.relay is False
    topic, payload = node.sent[0]
    assert topic == "cityedge/node/v1/riverside/gate-1/cmd"
    doc = json.loads(payload)
    assert doc["kid"].startswith("gw-1-cmd-") and doc["delegation"]["purpose"] == "delegation"
    assert doc["exp"] == int(NOW) + 60  # command_ttl_s on the injected clock
    assert len({json.loads(p)["nonce"] for _t, p in node.sent}) == 2


async def test_a_node_of_another_gateway_refuses_and_the_app_is_told_why(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src, gateway="gw-2")
    with pytest.raises(ActuationError, match="refused the command: wrong-gateway") as err:
        await drive(src, node, True)
    assert err.value.code == "CE210" and node.relay is False


async def test_a_relay_that_does_not_switch_is_failed(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)
    node.behave = lambda n, _got, nonce: n.reply(nonce, Result.FAILED, "relay did not switch")
    with pytest.raises(DeviceError, match="could not switch its relay: relay did not switch"):
        await drive(src, node, True)


async def test_no_reply_is_a_timeout_on_the_injected_clock(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)
    node.behave = lambda *_: None
    with pytest.raises(NodeNoReply, match="did not answer the command within 10 s"):
        await drive(src, node, True, settle_s=10)
    assert src.nodes["gate-1"].pending is None


async def test_a_node_whose_will_came_is_not_waited_for_and_is_driven_once_back(
    tmp_path: Path,
) -> None:
    """A resident at a gate whose node lost power is told at once, not after the reply
    timeout; the node's next frame makes it writable again."""
    src = make(tmp_path)
    node = FakeNode(src)
    will = nodewire.encode_status(1, 0, nodewire.NodeState.OFFLINE, (1, 0, 0), "")
    await src.handle(Message(nodewire.node_topic("riverside", "gate-1", "status"), will, 1, True))
    with pytest.raises(DeviceError, match="node gate-1 is offline") as err:
        await drive(src, node, True)
    assert err.value.code == "CE310" and node.sent == []
    node.report(False)
    await node.deliver()
    assert await drive(src, node, True) is True


async def test_no_report_after_the_reply_is_a_timeout(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)
    node.behave = lambda n, _got, nonce: n.reply(nonce, Result.DONE, "open")
    with pytest.raises(NodeNoReply, match="did not report its relay"):
        await drive(src, node, True, settle_s=10)


async def test_the_read_back_is_a_report_taken_after_the_reply(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)

    def late(n: FakeNode, _got: signed.Verified | Exception, nonce: str) -> None:
        n.report(False, at=n.now() - 9)  # before the reply: not what the command did
        n.reply(nonce, Result.DONE, "open")
        n.report(False, at=n.now() - 5)  # from the flash queue, taken before the command
        n.report(False)  # the same second: may predate the command; skipped
        n.report(True, at=n.now() + 1)

    node.behave = late
    assert await drive(src, node, True) is True


async def test_a_later_report_that_differs_is_a_failed_write(tmp_path: Path) -> None:
    src = make(tmp_path)
    node = FakeNode(src)

    def bounced(n: FakeNode, _got: signed.Verified | Exception, nonce: str) -> None:
        n.reply(nonce, Result.DONE, "open")
        n.report(False, at=n.now() + 1)

    node.behave = bounced
    with pytest.raises(DeviceError, match="wrote True, read back False"):
        await drive(src, node, True)


async def test_without_the_site_broker_the_command_is_not_sent(tmp_path: Path) -> None:
    src = make(tmp_path)
    with pytest.raises(DeviceError, match="not connected to the site broker"):
        await src.write("gate-1", "relay_on", True)


@pytest.mark.parametrize(
    ("device", "point", "value", "words"),
    [
        ("gate-9", "relay_on", True, "no node 'gate-9'"),
        ("bin-17", "relay_on", True, "no writable point"),
        ("gate-1", "door_open", True, "no writable point"),
        ("gate-1", "relay_on", 1, "true or false"),
    ],
)
async def test_writes_that_cannot_be_are_refused_before_sending(
    tmp_path: Path, device: str, point: str, value: Any, words: str
) -> None:
    src = make(tmp_path)
    node = FakeNode(src)
    src._session = node  # type: ignore[assignment]
    with pytest.raises(ActuationError, match=words):
        await src.write(device, point, value)
    assert node.sent == []


async def test_without_a_command_key_nodes_are_read_only(tmp_path: Path) -> None:
    cfg = MqttSourceConfig.model_validate(
        {
            "type": "mqtt",
            "name": "nodes",
            "host": "h",
            "nodes": [{"name": "gate-1", "kind": "gate-relay"}],
        }
    )
    src = make(tmp_path)
    src.command_key = None
    with pytest.raises(ActuationError, match="no command key"):
        await src.write("gate-1", "relay_on", True)
    info = cfg.catalog(CheckContext(Path("."))).devices["gate-1"]["relay_on"]
    assert info.writable is False


def test_with_commands_relay_on_is_writable_in_the_catalog(tmp_path: Path) -> None:
    src = make(tmp_path)
    found = src.config.catalog(CheckContext(Path("."))).devices
    assert found["gate-1"]["relay_on"].writable and not found["gate-1"]["door_open"].writable
    assert not found["bin-17"]["fill_pct"].writable


def _break(tmp: Path, how: str) -> dict[str, str]:
    files = key_files(tmp)
    if how == "no key file":
        (tmp / "command.key").unlink()
    elif how == "key readable by others":
        os.chmod(tmp / "command.key", 0o644)
    elif how == "not a key":
        (tmp / "command.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    elif how == "another key delegated":
        (tmp / "other").mkdir()
        other = key_files(tmp / "other")
        files["delegation_file"] = other["delegation_file"]
    elif how == "delegated to another gateway":
        files = key_files(tmp, gateway="gw-2")
    elif how == "expired":
        files = key_files(tmp, expires_at=int(NOW) - 1)
    elif how == "garbage delegation":
        (tmp / "command-delegation.json").write_text("[1, 2")
    return files


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("no key file", "cannot read"),
        ("key readable by others", "chmod 600"),
        ("not a key", "not an Ed25519 key"),
        ("another key delegated", "delegates another key"),
        ("delegated to another gateway", "delegated to gateway gw-2"),
        ("expired", "expired"),
        ("garbage delegation", "bad-delegation"),
    ],
)
def test_a_command_key_that_cannot_serve_stops_the_source_with_a_hint(
    tmp_path: Path, how: str, words: str
) -> None:
    files = _break(tmp_path, how)
    with pytest.raises(CommandKeyError) as err:
        make(tmp_path, commands=files)
    text = f"{err.value.message} {err.value.hint}"
    assert words in text and "BEGIN" not in text, text
