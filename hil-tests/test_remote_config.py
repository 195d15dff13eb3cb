"""config.get and config.apply on the real gateway process: validated, applied atomically,
confirmed when the link is back, rolled back when it is not."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from bridge_hil import wait_log
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hil import start_gateway, start_simulator

from cloud_bridge.link import LinkSettings, MqttLink
from protocols import commands, signed, topics
from sim.localsite import Broker, Proc, free_port

OPS = Ed25519PrivateKey.generate()


def site_yaml(sim_port: int, mqtt_port: int, http_port: int, description: str = "") -> str:
    key = signed.b64url(signed.public_key_raw(OPS))
    return f"""
site: hil
gateway: gw-cfg
description: "{description}"
http: {{port: {http_port}}}
shutdown_flush_s: 2
sources:
  - type: modbus
    name: river
    host: 127.0.0.1
    port: {sim_port}
    devices: [{{name: sonde, profile: water-sonde, poll_interval_s: 1}}]
sinks:
  - type: mqtt
    name: brain
    host: 127.0.0.1
    port: {mqtt_port}
    reconnect_initial_s: 0.2
    reconnect_max_s: 1
    connect_timeout_s: 2
    outbox: {{path: outbox.db}}
    commands: {{keys: {{ops: "{key}"}}, rollback_after_s: 4}}
"""


async def ask(
    brain: MqttLink, command: str, timeout_s: float = 30, **args: object
) -> commands.CommandReply:
    rid = f"t-{secrets.token_hex(4)}"
    body = commands.encode_request(
        commands.CommandRequest(id=rid, site="hil", gateway="gw-cfg", command=command, args=args)
    )
    data = signed.sign(
        body, purpose="command", kid="ops", key=OPS, expires_at=int(time.time()) + 60
    )
    await brain.publish(topics.command_request_topic("hil", "gw-cfg"), data)
    async with asyncio.timeout(timeout_s):
        while True:
            reply = commands.decode_reply((await brain.receive()).payload)
            if reply.request == rid:
                return reply


async def ask_until_up(brain: MqttLink, command: str) -> commands.CommandReply:
    """Commands sent while the gateway (re)connects find nobody subscribed: ask again."""
    for _ in range(20):
        try:
            return await ask(brain, command, timeout_s=3)
        except TimeoutError:
            continue
    raise AssertionError(f"no reply to {command} within a minute")


async def test_config_apply_is_validated_confirmed_or_rolled_back(
    tmp_path: Path, mosquitto: Broker, procs: list[Proc]
) -> None:
    sim, sim_ctl, http = free_port(), free_port(), free_port()
    start_simulator(procs, tmp_path, "water-sonde", sim, sim_ctl)
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml(sim, mosquitto.port, http))
    gateway = start_gateway(procs, tmp_path, config, http)
    brain_link = LinkSettings("127.0.0.1", mosquitto.port, client_id="brain")
    async with MqttLink.open(brain_link) as brain:
        await brain.subscribe(topics.command_reply_topic("hil", "gw-cfg"))
        got = await ask_until_up(brain, "config.get")
        assert got.ok and got.result is not None
        first_sha = got.result["sha256"]
        assert got.result["config"]["gateway"] == "gw-cfg"
        assert got.result["config"]["sinks"][0]["password"] is None

        # an invalid file changes nothing and says what is wrong
        bad = await ask(brain, "config.apply", yaml="site: hil\ngateway: gw-cfg\nsources: 7\n")
        assert (bad.ok, bad.reason) == (False, "bad-args")
        assert "sources" in bad.message
        assert (await ask(brain, "config.get")).result["sha256"] == first_sha  # type: ignore[index]

        # a good one is applied, the stages restart, and the link coming back confirms it
        new_text = site_yaml(sim, mosquitto.port, http, description="applied remotely")
        applied = await ask(brain, "config.apply", yaml=new_text, expect_sha256=first_sha)
        assert applied.ok and applied.result is not None and applied.result["applied"] is True
        await asyncio.to_thread(wait_log, gateway, "config.confirmed", 30)
        now = await ask_until_up(brain, "config.get")
        assert now.result is not None and now.result["config"]["description"] == "applied remotely"
        assert config.read_text() == new_text and not (tmp_path / "site.yaml.trial").exists()

        # one that loses the link (a broker port nobody listens on) is rolled back in time
        lost = site_yaml(sim, free_port(), http, description="unreachable broker")
        applied = await ask(brain, "config.apply", yaml=lost)
        assert applied.ok
        await asyncio.to_thread(wait_log, gateway, "config.rolled-back", 30)
        back = await ask_until_up(brain, "config.get")
        assert (
            back.result is not None and back.result["config"]["description"] == "applied remotely"
        )
        assert config.read_text() == new_text
        assert gateway.alive()
