"""Helpers for sensor-node scenarios: a provisioned site, its TLS broker, nodes booted from their
LittleFS images on the MicroPython unix port, and a client that reads node frames.

Imported as ``nodes`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import nodewire
from provisioning.site import Site
from provisioning.vm import micropython_path
from sim.localsite import Broker, Proc, cityedge_argv, free_port, start

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
NODE_HEAP = "128K"  # TLS on the unix port: mbedTLS buffers live in the MicroPython heap here


def cli(*args: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``cityedge ... --json`` and return its JSON (with the exit code as ``_rc``)."""
    run = subprocess.run(
        cityedge_argv(*args, "--json"),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    try:
        doc: dict[str, Any] = json.loads(run.stdout)
    except ValueError as err:
        raise AssertionError(f"not JSON (rc {run.returncode}): {run.stdout}\n{run.stderr}") from err
    doc["_rc"] = run.returncode
    return doc


def provision_bin(site: Site, hwid: str, name: str, *extra: str) -> dict[str, Any]:
    """``cityedge provision node`` for a bin-fill node on the unix port, reporting every second."""
    return cli(
        "provision",
        "node",
        "-d",
        str(site.root),
        "--hwid",
        hwid,
        "--name",
        name,
        "--kind",
        "bin-fill",
        "--target",
        "unix",
        "--interval-s",
        "1",
        *extra,
    )


def provision_gate_relay(
    site: Site, gateways: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A gate-relay node gate-1 on the unix port (reporting every 2 s) that obeys the first of
    ``gateways``, then each gateway provisioned: the node's ``provision`` answer (its ``image``)
    and each gateway's (its ``source_yaml``, which lists gate-1 for the first)."""
    node = cli(
        "provision", "node", "-d", str(site.root), "--hwid", "0a0b0c0d0e21", "--name", "gate-1",
        "--kind", "gate-relay", "--target", "unix", "--interval-s", "2", "--gateway", gateways[0],
    )  # fmt: skip
    assert node["ok"], node
    docs = {}
    for i, name in enumerate(gateways):
        doc = cli(
            "provision", "gateway", "-d", str(site.root), "--hwid", f"02420a0000{i + 1:02x}",
            "--name", name,
        )  # fmt: skip
        assert doc["ok"], doc
        docs[name] = doc
    return node, docs


def node_source_yaml(site_dir: Path, broker_port: int, nodes: list[str]) -> str:
    """The gateway's ``mqtt`` source for bin-fill ``nodes`` on the site broker, as gw-1."""
    gw = (site_dir / "gateways" / "gw-1").resolve()
    listed = ", ".join(f"{{name: {n}, kind: bin-fill}}" for n in nodes)
    return f"""
  - type: mqtt
    name: nodes
    host: 127.0.0.1
    port: {broker_port}
    reconnect_initial_s: 0.2
    reconnect_max_s: 1
    tls: {{ca_file: {gw}/ca.pem, cert_file: {gw}/gateway.pem, key_file: {gw}/gateway.key}}
    nodes: [{listed}]"""


def make_site(tmp: Path, site: str = "riverside") -> Site:
    port = free_port()
    doc = cli(
        "provision",
        "init-site",
        "-d",
        str(tmp / "site"),
        "--site",
        site,
        "--broker-host",
        "127.0.0.1",
        "--broker-port",
        str(port),
    )
    assert doc["ok"], doc
    return Site.open(tmp / "site")


def start_site_broker(site: Site, workdir: Path) -> Broker:
    """The site's local broker: TLS, client certificates as identities, the generated ACL, and
    persistence on (as Debian's mosquitto.conf has it), so the gateway's session survives a
    restart."""
    return Broker.start(
        workdir,
        extra_conf=site.broker_conf(listener=False),
        port=site.broker_port,
        persistence=True,
    )


@dataclass
class NodeRunner:
    """A node booted from its image (a copy, as the board's flash) in its own folder."""

    procs: list[Proc]
    workdir: Path
    image: Path
    name: str
    boots: int = 0
    proc: Proc | None = None
    env: dict[str, str] = field(default_factory=dict)  # more environment for the VM

    @classmethod
    def from_image(cls, procs: list[Proc], workdir: Path, image: Path, name: str) -> NodeRunner:
        workdir.mkdir(parents=True, exist_ok=True)
        flash = workdir / "flash.img"
        flash.write_bytes(image.read_bytes())
        return cls(procs, workdir, flash, name)

    def world(self, **values: Any) -> None:
        tmp = self.workdir / "sim.json.tmp"
        tmp.write_text(json.dumps(values))
        os.replace(tmp, self.workdir / "sim.json")

    def boot(self) -> Proc:
        self.boots += 1
        env = {
            "MICROPYPATH": f"{FIRMWARE / 'sim'}:{FIRMWARE / 'tools'}",
            "SIM_WORLD": str(self.workdir / "sim.json"),
            **self.env,
        }
        argv = [
            micropython_path(),
            "-X",
            f"heapsize={NODE_HEAP}",
            str(FIRMWARE / "tools" / "boot_image.py"),
            str(self.image),
        ]
        self.proc = start(f"{self.name}-boot{self.boots}", argv, self.workdir, env)
        self.procs.append(self.proc)
        return self.proc

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.popen.wait(timeout_s)

    def log(self) -> str:
        return "\n".join(p.tail(60) for p in self.procs if p.name.startswith(self.name))


def fill_world(
    fill_pct: float, empty_mm: int = 1200, full_mm: int = 200, temp_c: float = 20.0
) -> dict[str, Any]:
    """The sensor readings a bin-fill node at ``fill_pct`` sees (pins of the esp32 defaults)."""
    distance = empty_mm - fill_pct / 100 * (empty_mm - full_mm)
    echo_us = round(distance * 2000 / (331.3 + 0.606 * temp_c))
    return {"echo_us": {"18": echo_us}, "adc_mv": {"34": 500 + 10 * temp_c}}


@dataclass
class Received:
    topic: str
    frame: nodewire.Frame
    retained: bool
    at: float


@dataclass
class NodeClient:
    """A TLS MQTT client with a site identity (technician or gateway), collecting node frames."""

    site: Site
    cert: Path
    key: Path
    topics: list[str]
    frames: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"hil-{self.cert.stem}-{time.monotonic_ns()}"
        )
        ctx = ssl.create_default_context(cafile=str(self.site.root / "ca.pem"))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self.client.tls_set_context(ctx)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.site.broker_port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("node client could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            frame = nodewire.decode(bytes(msg.payload))
        except ValueError:
            return
        with self._lock:
            self.frames.append(Received(msg.topic, frame, bool(msg.retain), time.monotonic()))

    def received(self, kind: type, since: float = 0.0) -> list[Received]:
        """Frames of ``kind`` heard since ``since`` (monotonic), with when; retained ones not."""
        with self._lock:
            return [
                r
                for r in self.frames
                if isinstance(r.frame, kind) and r.at >= since and not r.retained
            ]

    def of(self, kind: type, since: float = 0.0) -> list[Any]:
        return [r.frame for r in self.received(kind, since)]

    def statuses(self, since: float = 0.0) -> list[nodewire.StatusFrame]:
        return list(self.of(nodewire.StatusFrame, since))

    def wait_for(
        self, pred: Callable[[], bool], timeout_s: float, what: str, log: Callable[[], str] = str
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{log()}")

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def technician(site: Site, node: str) -> NodeClient:
    return NodeClient(
        site,
        site.root / "technician.pem",
        site.root / "technician.key",
        [nodewire.node_topic(site.site, node, c) for c in ("status", "up")],
    )


def gateway_client(site: Site, gateway: str, node: str) -> NodeClient:
    d = site.root / "gateways" / gateway
    return NodeClient(
        site,
        d / "gateway.pem",
        d / "gateway.key",
        [nodewire.node_topic(site.site, node, c) for c in ("status", "up", "res")],
    )
