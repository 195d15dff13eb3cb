"""A provisioned bin-fill node on the MicroPython unix port, booted from its LittleFS image,
reports over TLS with its own certificate to the site's mosquitto; the real gateway process reads
it with the ``mqtt`` source and its readings reach the city brain's broker. The site broker
restarts: the node reconnects, resubscribes and delivers what it queued meanwhile. The gateway
restarts: what the node sent meanwhile waited at the broker in the gateway's session."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from hil import Subscriber, start_gateway
from nodes import (
    NodeRunner,
    cli,
    fill_world,
    gateway_client,
    make_site,
    node_source_yaml,
    provision_bin,
    start_site_broker,
    technician,
)

from protocols import envelope as env
from protocols import nodewire, signed
from sim.localsite import Broker, Proc, free_port


def gateway_yaml(site_dir: Path, broker_port: int, cloud_port: int, http_port: int) -> str:
    return f"""
site: riverside
gateway: gw-1
http: {{port: {http_port}}}
shutdown_flush_s: 5
sources:{node_source_yaml(site_dir, broker_port, ["bin-1"])}
apps:
  - type: thresholds
    name: full-bins
    rules:
      - {{device: bin-1, point: fill_pct, above: 80, severity: minor, hysteresis: 5}}
sinks:
  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {cloud_port}, reconnect_max_s: 1}}
"""


def fills(sub: Subscriber, since: float = 0.0) -> list[tuple[float, float]]:
    """(node time, fill %) of every bin-1 telemetry envelope the brain received."""
    out = []
    for m in sub.of("telemetry", "bin-1", since=since):
        assert isinstance(m.envelope, env.TelemetryEnvelope)
        for r in m.envelope.payload.readings:
            if r.point == "fill_pct":
                assert r.unit == "%"
                out.append((m.envelope.time.timestamp(), float(r.value)))
    return out


def fills_of(sub: Subscriber, pct: float, start: float, end: float) -> list[tuple[float, float]]:
    """The readings of ``pct`` measured between ``start`` and ``end`` (wall clock). Frame times
    are whole seconds; only readings taken after the world changed show the new level."""
    return [(t, f) for t, f in fills(sub) if start - 1 <= t <= end and abs(f - pct) <= 0.5]


def test_node_reports_through_the_gateway_and_survives_a_broker_restart(
    tmp_path: Path,
    mosquitto: Broker,
    procs: list[Proc],
    subscriber_factory: Callable[[int], Subscriber],
) -> None:
    site = make_site(tmp_path)
    node_doc = provision_bin(
        site,
        "0a:0b:0c:0d:0e:01",
        "bin-1",
        "--gateway",
        "gw-1",
        "--set",
        "empty_mm=1200",
        "--set",
        "full_mm=200",
    )
    assert node_doc["ok"] and node_doc["created"], node_doc
    gw_doc = cli(
        "provision", "gateway", "-d", str(site.root), "--hwid", "0a0b0c0d0e99", "--name", "gw-1"
    )
    assert gw_doc["ok"], gw_doc

    local = start_site_broker(site, tmp_path / "local-broker")
    procs.append(local.proc)
    brain = subscriber_factory(mosquitto.port)
    node = NodeRunner.from_image(procs, tmp_path / "node", Path(node_doc["image"]), "bin-1")
    node.world(**fill_world(50))
    tech = technician(site, "bin-1")  # before the boot: it must not miss the first statuses
    node.boot()
    http = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(gateway_yaml(site.root, site.broker_port, mosquitto.port, http))
    gateway = start_gateway(procs, tmp_path, config, http)
    try:
        # 1: the node reports with its certificate; the gateway turns frames into telemetry
        brain.wait_for(lambda: len(fills(brain)) >= 3, 40, "bin-1 fill levels at the brain")
        assert all(abs(f - 50) <= 0.5 for _t, f in fills(brain)), fills(brain)
        tech.wait_for(
            lambda: any(s.state is nodewire.NodeState.HEALTHY for s in tech.statuses()),
            20,
            "the node's healthy status",
            node.log,
        )
        assert tech.statuses()[-1].version == (1, 0, 0)

        # 2: the site broker goes away; the node keeps measuring into its queue
        local.stop()
        outage_start = time.time()
        node.world(**fill_world(90))
        time.sleep(6)
        outage_end = time.time()
        local.restart()
        procs.append(local.proc)

        # 3: what was queued arrives, stamped with the time it was measured
        brain.wait_for(
            lambda: len(fills_of(brain, 90, outage_start, outage_end)) >= 3,
            40,
            "readings queued during the outage",
        )
        brain.wait_for(lambda: len(brain.of("alarm", "bin-1")) >= 1, 20, "the full-bin alarm")
        assert node.proc is not None and node.proc.alive(), node.log()
        assert "link lost" in node.log()

        # 3b: the gateway restarts; what the node sent meanwhile waited for it at the broker
        # (the gateway's persistent session), it was not dropped for want of a subscriber
        assert gateway.stop() == 0, gateway.log_path.read_text()
        node.world(**fill_world(70))
        away_start = time.time()
        time.sleep(4)
        away_end = time.time()
        gateway = start_gateway(procs, tmp_path, config, http)
        brain.wait_for(
            lambda: len(fills_of(brain, 70, away_start, away_end)) >= 3,
            30,
            "readings sent while the gateway was down",
        )

        # 4: the node subscribed again: a signed command reaches it and it answers
        gw = gateway_client(site, "gw-1", "bin-1")
        try:

            def command() -> bytes:  # a fresh nonce each time: the node acts on one once
                body = json.dumps({"node": "bin-1", "action": "open"}).encode()
                expires = int(time.time()) + 60
                return signed.sign(
                    body,
                    purpose="command",
                    kid=site.ota_kid,
                    key=site.ota_key(),
                    expires_at=expires,
                )

            deadline = time.monotonic() + 30
            while not gw.of(nodewire.ReplyFrame) and time.monotonic() < deadline:
                gw.publish(nodewire.node_topic("riverside", "bin-1", "cmd"), command())
                time.sleep(1)
            replies = gw.of(nodewire.ReplyFrame)
            assert replies, node.log()
            assert replies[0].result is nodewire.Result.REFUSED
            assert replies[0].message == "a bin-fill node takes no commands"
        finally:
            gw.close()

        # 5: the node dies; the broker sends its will; the brain hears "unavailable" once
        node.proc.kill()
        brain.wait_for(lambda: len(brain.of("availability", "bin-1")) >= 1, 30, "bin-1 unavailable")
        a = brain.of("availability", "bin-1")[0].envelope
        assert isinstance(a, env.AvailabilityEnvelope)
        assert a.payload.state is env.AvailabilityState.UNAVAILABLE
        assert gateway.alive()
    finally:
        tech.close()
