"""``cityedge provision`` end to end: the image is built, the real mpremote copies the firmware
and config onto a MicroPython VM reached over socket:// (a loopback bridge to its raw REPL); the
inventory, certificate and ACL are right; the image reads back with littlefs-python and mounts in
MicroPython; the node boots from what was copied and the self-test sees its first message."""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nodes import FIRMWARE, NodeRunner, cli, fill_world, make_site, provision_bin, start_site_broker

from provisioning.image import read_littlefs
from provisioning.site import Site, cert_sha256
from provisioning.vm import micropython_path
from sim.localsite import Proc, cityedge_argv, free_port, start, wait_port


def start_vm(procs: list[Proc], workdir: Path, board: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = start(
        f"vm-{port}",
        cityedge_argv("provision", "vm", "--image", str(board), "--port", str(port)),
        workdir,
    )
    procs.append(proc)
    wait_port(port, proc=proc)
    return proc, f"socket://127.0.0.1:{port}"


def provision(site: Site, hwid: str, name: str, copy: str) -> dict[str, Any]:
    return provision_bin(site, hwid, name, "--copy", copy)


def test_provision_copy_inventory_certificate_acl_image_and_self_test(
    tmp_path: Path, procs: list[Proc]
) -> None:
    site = make_site(tmp_path)
    board = tmp_path / "board.img"  # the VM's flash
    vm, device = start_vm(procs, tmp_path, board)

    doc = provision(site, "0A:0B:0C:0D:0E:03", "bin-3", device)
    assert doc["ok"] and doc["created"], doc
    assert doc["steps"] == [
        "check",
        "certificate",
        "config",
        "compile",
        "image",
        "inventory",
        "copy",
    ]
    out = Path(str(doc["dir"]))

    # the inventory: one row, keyed by the normalized hardware id
    db = sqlite3.connect(site.root / "inventory.sqlite")
    rows = db.execute(
        "SELECT hwid, name, role, kind, target, identity, revision, cert_sha256 FROM devices"
    ).fetchall()
    cert = x509.load_pem_x509_certificate((out / "node.pem").read_bytes())
    assert rows == [
        (
            "0a0b0c0d0e03",
            "bin-3",
            "node",
            "bin-fill",
            "unix",
            "node.riverside.bin-3",
            1,
            cert_sha256(cert),
        )
    ]

    # the certificate: issued by the site CA to the node's identity, for client authentication
    ca = x509.load_pem_x509_certificate((site.root / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node.riverside.bin-3"
    )
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    key = serialization.load_pem_private_key((out / "node.key").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert os.stat(out / "node.key").st_mode & 0o777 == 0o600

    # the ACL: the node writes only its own reports and reads only its own commands and updates
    acl = (site.root / "broker" / "acl").read_text()
    block = acl[acl.index("user node.riverside.bin-3") :].split("\n\n")[0].strip().splitlines()
    p = "cityedge/node/v1/riverside/bin-3"
    assert sorted(block[1:]) == sorted(
        [
            f"topic write {p}/up",
            f"topic write {p}/status",
            f"topic write {p}/res",
            f"topic read {p}/cmd",
            f"topic read {p}/ota",
            f"topic read {p}/ota/data",
        ]
    )

    # the image reads back with littlefs-python; the board got the same files through mpremote
    built = read_littlefs(Path(str(doc["image"])).read_bytes())
    assert sorted(built) == doc["files"]
    assert built["certs/node.der"] == cert.public_bytes(serialization.Encoding.DER)
    assert b'"node": "bin-3"' in built["config.json"]
    vm.stop()
    copied = read_littlefs(board.read_bytes())
    assert copied == built

    # the built image mounts in MicroPython
    mounted = tmp_path / "mounted.img"
    mounted.write_bytes(Path(str(doc["image"])).read_bytes())
    run = subprocess.run(
        [
            micropython_path(),
            "-c",
            "import sys; sys.path.insert(0, {!r}); from lfsmount import mount; mount({!r}); import os, json; "
            "print(sorted(os.listdir('/flash/app/cenode'))); print(json.load(open('/flash/config.json'))['node'])".format(
                str(FIRMWARE / "tools"), str(mounted)
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names, node_name = run.stdout.splitlines()
    assert ast.literal_eval(names) == sorted(
        n.split("/")[-1] for n in built if n.startswith("app/cenode/")
    )
    assert node_name == "bin-3"

    # the board boots from what mpremote copied, and the self-test hears it
    broker = start_site_broker(site, tmp_path / "broker")
    procs.append(broker.proc)
    node = NodeRunner(procs, tmp_path / "node", board, "bin-3")
    node.workdir.mkdir()
    node.world(**fill_world(20))
    node.boot()
    seen = cli(
        "provision", "self-test", "-d", str(site.root), "--name", "bin-3", "--timeout-s", "30"
    )
    assert seen["ok"] and seen["_rc"] == 0, (seen, node.log())
    assert seen["type"] in ("StatusFrame", "ReadingsFrame")

    # a node that never comes: exit 4 with a hint
    silent = cli(
        "provision", "self-test", "-d", str(site.root), "--name", "bin-99", "--timeout-s", "2"
    )
    assert (
        silent["_rc"] == 4 and silent["code"] == "CE520" and "sent nothing" in str(silent["error"])
    )
    assert "reloaded" in str(silent["hint"])

    # the same board again: the same row, revision 2; another board cannot take the name
    assert node.proc is not None
    node.proc.stop()
    build = [
        "provision",
        "node",
        "-d",
        str(site.root),
        "--kind",
        "bin-fill",
        "--target",
        "unix",
        "--name",
        "bin-3",
    ]
    again = cli(*build, "--hwid", "0a0b0c0d0e03")
    assert again["ok"] and not again["created"] and again["device"]["revision"] == 2
    assert db.execute("SELECT count(*), max(revision) FROM devices").fetchone() == (1, 2)
    taken = cli(*build, "--hwid", "0a0b0c0d0e04")
    assert (
        taken["_rc"] == 1 and taken["code"] == "CE500" and "already belongs" in str(taken["error"])
    )
    db.close()
