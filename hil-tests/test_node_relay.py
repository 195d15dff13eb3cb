"""A gate-relay node driven by its gateway: a node provisioned for gw-1 on the MicroPython unix
port (booted from its LittleFS image), the site's TLS mosquitto with the generated ACL, and the
gateway's ``mqtt`` source plug-in (gw-1's certificate and command key, as ``provision gateway``
wrote them) behind the gateway's actuator router, driven as an app drives a relay
(``ctx.actuators.write(device, point, value)``).

1. gw-1 opens the relay: the node verifies the site's delegation of gw-1's key (once), obeys,
   and the relay reads back true from its next report.
2. gw-2, another gateway of the same site with its own certified command key, tries to close
   it: the node refuses (``wrong-gateway``, on its ``res`` topic), the app gets the refusal, and
   the node's reports still say the relay is on.
3. gw-1 closes it: read back false (the delegation is cached: one verification).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodes import NodeRunner, make_site, provision_gate_relay, start_site_broker

from edge.actuators import ActuationError, Actuators
from edge.channel import Channel, Overflow
from edge.clock import SystemClock
from edge.config.base import CheckContext
from edge.metrics import GatewayMetrics
from edge.node_mqtt.config import MqttSourceConfig
from edge.node_mqtt.source import MqttSource
from edge.plugin import Emitter, SourceContext
from edge.readings import ReadingBatch
from protocols import envelope as env
from sim.localsite import Proc

pytestmark = pytest.mark.xdist_group("heavy")


class Gateway:
    """One gateway's ``mqtt`` source (its provisioned files) and its actuator router."""

    def __init__(self, name: str, source_yaml: str, tmp: Path) -> None:
        block: dict[str, Any] = yaml.safe_load(source_yaml)[0]
        block |= {
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1,
            "nodes": [{"name": "gate-1", "kind": "gate-relay"}],
        }
        block["commands"] |= {"reply_timeout_s": 60, "readback_timeout_s": 30}
        cfg = MqttSourceConfig.model_validate(block)
        clock, metrics = SystemClock(), GatewayMetrics()

        async def deliver(_e: env.Outgoing) -> None:
            pass

        self.readings: Channel[ReadingBatch] = Channel("readings", 1000, Overflow.DROP_OLDEST)
        ctx = SourceContext(
            name="nodes",
            site="riverside",
            gateway=name,
            clock=clock,
            metrics=metrics,
            emitter=Emitter("riverside", name, clock, deliver, metrics),
            check=CheckContext(tmp),
            readings=self.readings,
        )
        self.source = MqttSource(cfg, ctx)
        self.actuators = Actuators(metrics)
        self.actuators.register("gate-1", self.source)
        self.relay: list[tuple[float, bool]] = []  # (when, relay_on) of each report heard

    async def listen(self) -> None:
        async for batch in self.readings:
            for r in batch.readings:
                if r.point == "relay_on" and isinstance(r.value, bool):
                    self.relay.append((time.monotonic(), r.value))


async def until(
    pred: Callable[[], bool], timeout_s: float, what: str, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{log()}")
        await asyncio.sleep(0.1)


def test_the_gateway_drives_its_node_and_another_gateways_key_is_refused(
    tmp_path: Path, procs: list[Proc]
) -> None:
    site = make_site(tmp_path)
    node_doc, docs = provision_gate_relay(site, ("gw-1", "gw-2"))
    gateways = {name: Gateway(name, doc["source_yaml"], tmp_path) for name, doc in docs.items()}
    broker = start_site_broker(site, tmp_path / "local-broker")
    procs.append(broker.proc)
    node = NodeRunner.from_image(procs, tmp_path / "gate-1", Path(node_doc["image"]), "gate-1")
    node.world(pins={})
    node.boot()
    gw1, gw2 = gateways["gw-1"], gateways["gw-2"]
    timings: dict[str, float] = {}

    async def timed(what: str, write: Awaitable[Any]) -> Any:
        t0 = time.monotonic()
        try:
            return await write
        finally:
            timings[what] = time.monotonic() - t0

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(t) for g in (gw1, gw2) for t in (g.source.run(), g.listen())]
            try:
                await until(lambda: bool(gw1.relay), 60, "gate-1's first report", node.log)
                assert gw1.relay[-1][1] is False

                # 1: gw-1 opens the relay; the node's next report reads it back
                back = await timed("gw-1 open", gw1.actuators.write("gate-1", "relay_on", True))
                assert back is True

                # 2: gw-2's key (certified by the site, for gw-2) is refused by gw-1's node
                with pytest.raises(ActuationError) as err:
                    await timed("gw-2 close", gw2.actuators.write("gate-1", "relay_on", False))
                assert (
                    "refused the command: wrong-gateway: key of gw-2; this node obeys gw-1"
                    in str(err.value)
                ), err.value
                refused_at = time.monotonic()
                await until(
                    lambda: any(t > refused_at for t, _v in gw1.relay), 30, "a report", node.log
                )
                assert [v for t, v in gw1.relay if t > refused_at] == [True] * len(
                    [t for t, _v in gw1.relay if t > refused_at]
                ), "the relay changed on gw-2's command"

                # 3: gw-1 closes it (its delegation is cached: one verification)
                back = await timed("gw-1 close", gw1.actuators.write("gate-1", "relay_on", False))
                assert back is False
            finally:
                for t in tasks:
                    t.cancel()
                for g in (gw1, gw2):
                    g.readings.close()

    asyncio.run(scenario())
    log = node.log()
    assert "command refused: wrong-gateway" in log, log
    assert log.count("command open -> open") == 1 and "command close -> close" in log, log
    assert node.proc is not None and node.proc.alive(), log
    print("\nwrites, seconds (send, node verifies, reply, read-back report):")
    for what, s in timings.items():
        print(f"  {what:<11} {s:5.2f}")
