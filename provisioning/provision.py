"""One command from a box to a trusted, reporting node: :func:`provision_node`.

Steps (each reported to ``progress``): check the input against the inventory; issue the node's
key and certificate from the site CA; write its config; compile the firmware for the target;
build the LittleFS image (and, for ESP32 with a firmware file, the merged flash image); record the
device and regenerate the broker's ACL; put it on the board (esptool over serial, or mpremote onto
a running MicroPython); and, if asked, wait for its first authenticated message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from protocols import nodewire, pki
from provisioning import image, label, selftest
from provisioning.errors import ProvisionInputError
from provisioning.inventory import Device, normalize_hwid
from provisioning.site import Site, cert_sha256, node_identity, write_private

Progress = Callable[[str, float], None]  # step name, fraction of the step done


@dataclass
class NodeRequest:
    hwid: str
    name: str
    kind: str
    target: str = "esp32"
    gateway: str | None = None
    wifi_ssid: str | None = None
    wifi_psk: str | None = field(default=None, repr=False)
    report_interval_s: float = 60
    app: Mapping[str, Any] = field(default_factory=dict)
    firmware_file: Path | None = None  # the technician's MicroPython .bin (ESP32)
    port: str | None = None  # flash over this serial port with esptool
    copy_to: str | None = None  # or copy with mpremote onto this device (e.g. socket://...)
    self_test_s: float | None = None  # wait this long for the first message


@dataclass
class NodeResult:
    device: Device
    created: bool
    out_dir: Path
    files: dict[str, bytes]
    image: Path
    merged: Path | None
    label: Path
    first_frame: nodewire.Frame | None
    steps: list[str]


def _check(site: Site, req: NodeRequest) -> tuple[str, image.Target]:
    hwid = normalize_hwid(req.hwid)
    try:
        nodewire.node_prefix(site.site, req.name)
    except ValueError as err:
        raise ProvisionInputError(str(err), hint="names like bin-17 or gate-north-2") from None
    if req.kind not in nodewire.NODE_KINDS:
        raise ProvisionInputError(
            f"unknown node kind {req.kind!r}", hint=f"one of {', '.join(nodewire.NODE_KINDS)}"
        )
    tgt = image.target(req.target)
    if (req.wifi_ssid is None) != (req.wifi_psk is None):
        raise ProvisionInputError("give both --wifi-ssid and --wifi-psk, or neither")
    if req.port and req.copy_to:
        raise ProvisionInputError("choose --port (flash) or --copy (mpremote), not both")
    if req.port and req.firmware_file is None:
        raise ProvisionInputError(
            "flashing needs the MicroPython firmware file",
            hint="pass --firmware ESP32_GENERIC-<version>.bin (from micropython.org)",
        )
    if req.firmware_file is not None:
        image.check_esp_firmware(req.firmware_file)
    if not 1 <= req.report_interval_s <= 86400:
        raise ProvisionInputError("--interval-s must be 1-86400 seconds")
    inv = site.inventory()
    try:
        inv.check_name(hwid, req.name)
    finally:
        inv.close()
    return hwid, tgt


def node_config(site: Site, req: NodeRequest, hwid: str, tgt: image.Target) -> dict[str, Any]:
    app: dict[str, Any] = {"pins": dict(tgt.pins[req.kind])}
    app.update(req.app)
    cfg: dict[str, Any] = {
        "site": site.site,
        "node": req.name,
        "kind": req.kind,
        "hwid": hwid,
        "broker": {
            "host": site.broker_host,
            "port": site.broker_port,
            "tls": True,
            "keepalive_s": 30,
        },
        "report_interval_s": req.report_interval_s,
        "queue_max": 32,
        "watchdog_ms": 30000 if tgt.name != "unix" else 0,
        "trusted_keys": site.trusted_keys(),
        "app": app,
    }
    if req.wifi_ssid is not None:
        cfg["wifi"] = {"ssid": req.wifi_ssid, "psk": req.wifi_psk}
    if req.gateway is not None:
        cfg["gateway"] = req.gateway
    return cfg


def provision_node(site: Site, req: NodeRequest, progress: Progress | None = None) -> NodeResult:
    say = progress or (lambda _s, _f: None)
    steps: list[str] = []

    def step(name: str) -> None:
        steps.append(name)
        say(name, 0.0)

    step("check")
    hwid, tgt = _check(site, req)
    out = site.device_dir(req.name)
    out.mkdir(parents=True, exist_ok=True)

    step("certificate")
    ca_key, ca_cert = site.ca()
    key, cert = pki.issue(ca_key, ca_cert, node_identity(site.site, req.name))
    write_private(out / "node.key", pki.key_pem(key))
    (out / "node.pem").write_bytes(pki.cert_pem(cert))
    der = serialization.Encoding.DER
    certs = {
        "ca.der": ca_cert.public_bytes(der),
        "node.der": cert.public_bytes(der),
        "node.key.der": key.private_bytes(
            der, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    }

    step("config")
    cfg = node_config(site, req, hwid, tgt)
    write_private(out / "config.json", json.dumps(cfg, indent=1, sort_keys=True).encode())

    step("compile")
    firmware = image.compile_firmware(tgt)
    files = image.node_files(firmware, cfg, certs)

    step("image")
    fs = image.littlefs_image(files, tgt.fs_bytes)
    write_private(out / "fs.img", fs)  # holds the node's private key
    merged = None
    if req.firmware_file is not None:
        merged = image.merge_bin(req.firmware_file, fs, out / "flash.bin", tgt)
        merged.chmod(0o600)

    step("inventory")
    inv = site.inventory()
    try:
        device, created = inv.record(
            hwid=hwid,
            name=req.name,
            role="node",
            kind=req.kind,
            target=tgt.name,
            identity=node_identity(site.site, req.name),
            cert_serial=format(cert.serial_number, "x"),
            cert_sha256=cert_sha256(cert),
            firmware=firmware["app/VERSION"].decode(),
        )
    finally:
        inv.close()
    site.write_broker_files()
    label_path, _png = label.write_label(
        out, site.site, req.name, hwid, req.kind, firmware["app/VERSION"].decode()
    )

    if req.port is not None and merged is not None:
        step("flash")
        image.flash(req.port, merged)
    elif req.copy_to is not None:
        step("copy")
        total = len(files)
        done = [0]

        def copied(_name: str) -> None:
            done[0] += 1
            say("copy", done[0] / total)

        image.mpremote_copy(req.copy_to, files, copied, reset=tgt.name != "unix")

    first = None
    if req.self_test_s is not None:
        step("self-test")
        first = selftest.wait_for_first_message(
            site.broker_host,
            site.broker_port,
            site.site,
            req.name,
            ca=site.root / "ca.pem",
            cert=site.root / "technician.pem",
            key=site.root / "technician.key",
            timeout_s=req.self_test_s,
        )
    return NodeResult(device, created, out, files, out / "fs.img", merged, label_path, first, steps)


@dataclass
class GatewayResult:
    device: Device
    created: bool
    out_dir: Path
    fleet: Any  # fleet.FleetDevice | None
    source_yaml: str


def provision_gateway(
    site: Site,
    hwid: str,
    name: str,
    *,
    fleet: str | None = None,
    balena_token: str | None = None,
    balena_api: str | None = None,
    progress: Progress | None = None,
) -> GatewayResult:
    """A gateway's certificate for the nodes' broker, its ACL entry, the ``mqtt`` source block
    for its site file, and (with ``fleet``) its registration in a balena fleet."""
    say = progress or (lambda _s, _f: None)
    say("check", 0.0)
    hwid = normalize_hwid(hwid)
    try:
        identity = pki.gateway_identity(site.site, name)
        nodewire.node_prefix(site.site, name)
    except ValueError as err:
        raise ProvisionInputError(str(err), hint="names like gw-1 or riverside-gw") from None
    if fleet is not None and not balena_token:
        raise ProvisionInputError(
            "joining a balena fleet needs an API token",
            hint="set BALENA_TOKEN or pass --balena-token",
        )
    inv = site.inventory()
    try:
        inv.check_name(hwid, name)
    finally:
        inv.close()
    joined = None
    if fleet is not None:
        from provisioning import fleet as fleet_mod

        say("fleet", 0.0)
        joined = fleet_mod.join_fleet(fleet, balena_token or "", balena_api)
    say("certificate", 0.0)
    out = site.root / "gateways" / name
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = site.ca()
    key, cert = pki.issue(ca_key, ca_cert, identity)
    write_private(out / "gateway.key", pki.key_pem(key))
    (out / "gateway.pem").write_bytes(pki.cert_pem(cert))
    (out / "ca.pem").write_bytes(pki.cert_pem(ca_cert))
    if joined is not None:
        write_private(out / "balena.json", json.dumps(joined.__dict__, indent=1).encode())
    say("inventory", 0.0)
    inv = site.inventory()
    try:
        device, created = inv.record(
            hwid=hwid,
            name=name,
            role="gateway",
            kind="gateway",
            target="balena" if joined else "linux",
            identity=identity,
            cert_serial=format(cert.serial_number, "x"),
            cert_sha256=cert_sha256(cert),
            firmware="-",
        )
        nodes = [d for d in inv.all() if d.role == "node"]
    finally:
        inv.close()
    site.write_broker_files()
    node_lines = (
        "".join(f"      - {{name: {d.name}, kind: {d.kind}}}\n" for d in nodes) or "      []\n"
    )
    source = (
        "  - type: mqtt\n"
        "    name: nodes\n"
        f"    host: {site.broker_host}\n"
        f"    port: {site.broker_port}\n"
        "    tls:\n"
        f"      ca_file: {out.resolve()}/ca.pem\n"
        f"      cert_file: {out.resolve()}/gateway.pem\n"
        f"      key_file: {out.resolve()}/gateway.key\n"
        "    nodes:\n" + node_lines
    )
    (out / "source.yaml").write_text(source)
    return GatewayResult(device, created, out, joined, source)
