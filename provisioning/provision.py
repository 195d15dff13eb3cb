"""One command from a box to a trusted, reporting node: :func:`provision_node`.

Steps (each reported to ``progress``): ``check`` everything the technician gave (hardware id,
name, kind, target, app settings against the app's declared schema, the firmware file, the
serial device or the copy target answering) before anything is written; ``certificate`` from
the site CA; ``config``; ``compile`` the firmware for the target; ``image`` (LittleFS, and for
ESP32 with a firmware file the merged flash image); before a board is written, ``broker``: the
ACL with the node (and a reload of the broker when the tool manages it), so the broker takes
its first frames; ``flash`` (esptool) or ``copy`` (mpremote, then a reset, so the board boots
the node); ``inventory``: the device's folder, its row, the ACL from the inventory; and, if
asked, ``self-test`` (:mod:`provisioning.selftest`).

A failed step leaves nothing behind: until ``inventory`` the files live in a staging folder of
the site (removed on failure), the row and the certificate's record are written only after the
board took its files, and a failed flash or copy puts the ACL back as the inventory has it.
Only a failed self-test (exit 4) leaves the node provisioned, with ``self_test = failed`` in
the inventory for ``provision list`` to show.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cityedge.console import check_serial
from protocols import nodewire, pki
from provisioning import image, label, selftest, settings
from provisioning.errors import ProvisionInputError, ProvisionRunError, SelfTestFailed
from provisioning.inventory import Device, normalize_hwid
from provisioning.progress import Progress, quiet
from provisioning.site import Reload, Site, cert_sha256, node_identity, write_private
from provisioning.sitebroker import Heard


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
    app: Mapping[str, Any] = field(default_factory=dict)  # typed settings (JSON values)
    sets: list[str] = field(default_factory=list)  # KEY=VALUE from the command line
    firmware_file: Path | None = None  # the technician's MicroPython .bin (ESP32)
    port: str | None = None  # flash over this serial port with esptool
    copy_to: str | None = None  # or copy with mpremote onto this device (e.g. socket://...)
    self_test_s: float | None = None  # wait this long for the broker's ACL and a report


@dataclass
class NodeResult:
    device: Device
    created: bool
    out_dir: Path
    files: dict[str, bytes]
    image: Path
    merged: Path | None
    label: label.Label
    first: Heard | None
    steps: list[str]
    reload: Reload
    self_test_error: SelfTestFailed | None = None  # written, but the node was not heard


@dataclass(frozen=True)
class Checked:
    hwid: str
    target: image.Target
    app: dict[str, Any]


def probe_copy_target(device: str, timeout_s: float = 3) -> None:
    """Something must answer where mpremote will copy: a serial device, or a TCP port."""
    if device.startswith(("socket://", "rfc2217://")):
        url = urlsplit(device)
        if not url.hostname or not url.port:
            raise ProvisionInputError(
                f"--copy {device}: expected socket://HOST:PORT", hint="e.g. socket://127.0.0.1:7000"
            )
        try:
            with socket.create_connection((url.hostname, url.port), timeout=timeout_s):
                pass
        except OSError as err:
            raise ProvisionRunError(
                f"nothing answers at {device}: {(err.strerror or str(err)).lower()}",
                hint="start the board's bridge first, e.g. 'cityedge provision vm --image board.img "
                f"--port {url.port}'",
            ) from None
    elif device.startswith("/dev/"):
        check_serial(device)


def check(site: Site, req: NodeRequest) -> Checked:
    """Everything that can be checked before writing; raises with a code and a hint."""
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
    app = settings.apply_sets(req.kind, {"pins": dict(tgt.pins[req.kind]), **req.app}, req.sets)
    if (req.wifi_ssid is None) != (req.wifi_psk is None):
        raise ProvisionInputError(
            "give both --wifi-ssid and --wifi-psk, or neither",
            hint="--wifi-psk also reads CITYEDGE_WIFI_PSK (kept out of the shell's history)",
        )
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
    if req.self_test_s is not None and req.self_test_s <= 0:
        raise ProvisionInputError("--wait-s must be positive")
    inv = site.inventory()
    try:
        inv.check_name(hwid, req.name)
    finally:
        inv.close()
    if req.port is not None:
        check_serial(req.port)
    if req.copy_to is not None:
        probe_copy_target(req.copy_to)
    return Checked(hwid, tgt, app)


def node_config(
    site: Site, req: NodeRequest, hwid: str, tgt: image.Target, app: Mapping[str, Any]
) -> dict[str, Any]:
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
        "app": dict(app),
    }
    if req.wifi_ssid is not None:
        cfg["wifi"] = {"ssid": req.wifi_ssid, "psk": req.wifi_psk}
    if req.gateway is not None:
        cfg["gateway"] = req.gateway
    return cfg


def _commit_folder(staging: Path, final: Path) -> None:
    """Put the staged device folder in place; a re-provisioned device's old folder goes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def provision_node(site: Site, req: NodeRequest, progress: Progress = quiet) -> NodeResult:
    steps: list[str] = []

    def step(name: str) -> None:
        steps.append(name)
        progress(name, 0.0)

    step("check")
    ok = check(site, req)
    hwid, tgt = ok.hwid, ok.target
    staging = Path(tempfile.mkdtemp(prefix=f".provision-{req.name}-", dir=site.root))
    try:
        step("certificate")
        ca_key, ca_cert = site.ca()
        key, cert = pki.issue(ca_key, ca_cert, node_identity(site.site, req.name))
        write_private(staging / "node.key", pki.key_pem(key))
        (staging / "node.pem").write_bytes(pki.cert_pem(cert))
        der = serialization.Encoding.DER
        certs = {
            "ca.der": ca_cert.public_bytes(der),
            "node.der": cert.public_bytes(der),
            "node.key.der": key.private_bytes(
                der, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        }

        step("config")
        cfg = node_config(site, req, hwid, tgt, ok.app)
        write_private(staging / "config.json", json.dumps(cfg, indent=1, sort_keys=True).encode())

        step("compile")
        firmware = image.compile_firmware(tgt)
        files = image.node_files(firmware, cfg, certs)
        version = firmware["app/VERSION"].decode()

        step("image")
        fs = image.littlefs_image(files, tgt.fs_bytes)
        write_private(staging / "fs.img", fs)  # holds the node's private key
        merged = None
        if req.firmware_file is not None:
            merged = image.merge_bin(req.firmware_file, fs, staging / "flash.bin", tgt)
            merged.chmod(0o600)
        qr = label.write_label(
            staging, site.site, req.name, hwid, req.kind, version, site.label_url
        )

        if req.port is not None or req.copy_to is not None:
            # the broker must know the node before it boots, or its first status frames are
            # dropped (mosquitto acknowledges them all the same); undone if the board fails
            step("broker")
            site.write_broker_files(pending=("node", req.name))
            site.reload_broker()
        if req.port is not None and merged is not None:
            step("flash")
            image.flash(req.port, merged)
        elif req.copy_to is not None:
            step("copy")
            total = len(files)
            done = [0]

            def copied(name: str) -> None:  # mpremote starts on this file
                done[0] += 1
                progress("copy", (done[0] - 1) / total, f"{name} ({done[0]}/{total})")

            # then a reset: the board (or the VM of 'provision vm') boots the node from its files
            image.mpremote_copy(req.copy_to, files, copied)

        step("inventory")
        out = site.device_dir(req.name)
        _commit_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if "broker" in steps:
            site.write_broker_files()  # without the node again
            site.reload_broker()
        raise
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
            firmware=version,
            report_interval_s=req.report_interval_s,
        )
    finally:
        inv.close()
    site.write_broker_files()
    reload = site.reload_broker()
    qr = dataclasses.replace(qr, svg=out / "label.svg", png=out / "qr.png")

    first, failed = None, None
    if req.self_test_s is not None:
        step("self-test")
        try:
            first = selftest.run(
                site,
                req.name,
                timeout_s=req.self_test_s,
                how_to_reload=reload.how,
                progress=progress,
            )
        except SelfTestFailed as err:
            failed = err
    inv = site.inventory()
    try:
        device = inv.by_name(req.name) or device  # with what the self-test learnt
    finally:
        inv.close()
    merged = out / "flash.bin" if merged else None
    return NodeResult(
        device, created, out, files, out / "fs.img", merged, qr, first, steps, reload, failed
    )


@dataclass
class GatewayResult:
    device: Device
    created: bool
    out_dir: Path
    fleet: Any  # fleet.FleetDevice | None
    source_yaml: str
    reload: Reload
    command_kid: str = ""  # the gateway's command key, delegated by the site
    command_expires_at: int = 0


def provision_gateway(
    site: Site,
    hwid: str,
    name: str,
    *,
    fleet: str | None = None,
    balena_token: str | None = None,
    balena_api: str | None = None,
    command_key_days: int = 365,
    progress: Progress = quiet,
) -> GatewayResult:
    """A gateway's certificate for the nodes' broker, its ACL entry, its command key (an Ed25519
    key the site delegates to it for ``command_key_days``: its nodes obey commands signed with
    it, see :mod:`protocols.delegation`), the ``mqtt`` source block for its site file, and (with
    ``fleet``) its registration in a balena fleet. As for nodes, a failed step (the fleet
    refusing it) leaves no file, row or ACL entry. Provisioning a gateway again gives it a new
    command key (a new key id); the old one is obeyed until its delegation expires."""
    progress("check", 0.0)
    if not 1 <= command_key_days <= 3650:
        raise ProvisionInputError(
            f"--command-key-days must be 1-3650 (got {command_key_days})",
            hint="how long the gateway's command key is valid; provision it again to renew",
        )
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
        known = inv.by_name(name)
    finally:
        inv.close()
    if known is not None and known.role != "gateway":
        raise ProvisionInputError(
            f"{name} is a {known.role} in the inventory, not a gateway",
            hint="pick another name for the gateway",
        )
    joined = None
    if fleet is not None:
        from provisioning import fleet as fleet_mod

        progress("fleet", 0.0)
        joined = fleet_mod.join_fleet(fleet, balena_token or "", balena_api)
    progress("certificate", 0.0)
    out = site.root / "gateways" / name
    staging = Path(tempfile.mkdtemp(prefix=f".provision-{name}-", dir=site.root))
    try:
        ca_key, ca_cert = site.ca()
        key, cert = pki.issue(ca_key, ca_cert, identity)
        write_private(staging / "gateway.key", pki.key_pem(key))
        (staging / "gateway.pem").write_bytes(pki.cert_pem(cert))
        (staging / "ca.pem").write_bytes(pki.cert_pem(ca_cert))
        progress("command key", 0.0)
        command_key = Ed25519PrivateKey.generate()
        write_private(
            staging / "command.key",
            command_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        granted = site.delegate_command_key(
            name, command_key.public_key(), int(time.time()) + command_key_days * 86400
        )
        (staging / "command-delegation.json").write_text(json.dumps(granted.envelope, indent=1))
        if joined is not None:
            write_private(staging / "balena.json", json.dumps(joined.__dict__, indent=1).encode())
        progress("inventory", 0.0)
        _commit_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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
    reload = site.reload_broker()
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
        "    commands:\n"
        f"      key_file: {out.resolve()}/command.key\n"
        f"      delegation_file: {out.resolve()}/command-delegation.json\n"
        "    nodes:\n" + node_lines
    )
    (out / "source.yaml").write_text(source)
    return GatewayResult(
        device, created, out, joined, source, reload, granted.kid, granted.expires_at
    )
