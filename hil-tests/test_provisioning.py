"""``cityedge provision`` end to end, as the README's trial runs it: the site's own mosquitto
(``broker/mosquitto.conf``, started as root: it drops to its own user, as Debian runs it), a
MicroPython VM as the board (``provision vm``), the real mpremote copying onto it over
socket://, the VM booting the node from what was copied, the tool reloading the broker and its
self-test waiting for the new ACL and the node's report; the inventory learns the node's
firmware, state and last seen. Also: the certificate, ACL and image are right; a board lost
in the middle of the copy leaves the site as it was; ``broker-config``'s files work with
mosquitto as its own user."""

from __future__ import annotations

import ast
import datetime as dt
import os
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from boards import (
    debian_way,
    reachable_dir,
    runs_as,
    snapshot,
    start_site_mosquitto,
    start_vm,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nodes import FIRMWARE, cli, provision_bin
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.image import read_littlefs
from provisioning.site import Site, cert_sha256
from provisioning.vm import micropython_path
from sim.localsite import Proc, cityedge_argv, free_port, mosquitto_path, start, wait_port

INTERVAL_S = "2"


def provision(site: Site, hwid: str, name: str, *extra: str) -> dict[str, Any]:
    return provision_bin(site, hwid, name, "--interval-s", INTERVAL_S, *extra)  # the last wins


def listed(site: Site, *extra: str) -> dict[str, dict[str, Any]]:
    doc = cli("provision", "list", "-d", str(site.root), *extra)
    assert doc["ok"], doc
    return {d["name"]: d for d in doc["devices"]}


def init_site(folder: Path) -> Site:
    doc = cli(
        "provision", "init-site", "-d", str(folder / "site"), "--site", "riverside",
        "--broker-host", "127.0.0.1", "--broker-port", str(free_port()),
    )  # fmt: skip
    assert doc["ok"], doc
    return Site.open(folder / "site")


def test_the_vm_trial_copy_boot_report_self_test_and_inventory(procs: list[Proc]) -> None:
    with reachable_dir() as folder:
        site = init_site(folder)
        broker = start_site_mosquitto(procs, site)
        if debian_way():
            # the keys it reads are its group's (0640), not root's 0600, nor everyone's
            assert runs_as(broker.pid) == "mosquitto", broker.tail()
        board = folder / "board.img"  # the VM's flash
        vm, device = start_vm(procs, folder, board)

        doc = provision(site, "0A:0B:0C:0D:0E:03", "bin-3", "--copy", device, "--self-test")
        assert doc["ok"] and doc["created"], (doc, vm.tail())
        assert doc["steps"] == [
            "check", "certificate", "config", "compile", "image", "broker", "copy", "inventory", "self-test",
        ]  # fmt: skip
        assert doc["self_test"] == "ok" and doc["first_message"]["type"] in (
            "StatusFrame",
            "ReadingsFrame",
        )
        assert doc["broker_reload"]["sent"], doc["broker_reload"]  # the tool manages this broker
        assert "node: bin-3 running firmware 1.0.0" in vm.tail()  # booted from what was copied
        out = Path(str(doc["dir"]))

        # the inventory: one row, keyed by the normalized hardware id, with what the node said
        db = sqlite3.connect(site.root / "inventory.sqlite")
        rows = db.execute(
            "SELECT hwid, name, role, kind, target, identity, revision, cert_sha256, self_test FROM devices"
        ).fetchall()
        cert = x509.load_pem_x509_certificate((out / "node.pem").read_bytes())
        assert rows == [
            ("0a0b0c0d0e03", "bin-3", "node", "bin-fill", "unix", "node.riverside.bin-3", 1, cert_sha256(cert), "ok")
        ]  # fmt: skip
        deadline = time.monotonic() + 30
        while (row := listed(site, "--refresh", "--window-s", "2")["bin-3"])["state"] != "healthy":
            assert time.monotonic() < deadline, (row, vm.tail())
        assert row["firmware"] == "1.0.0" and row["self_test"] == "ok"
        seen = dt.datetime.fromisoformat(row["last_seen"])
        assert abs(dt.datetime.now(dt.UTC) - seen) < dt.timedelta(minutes=2)
        text = subprocess.run(
            cityedge_argv("provision", "list", "-d", str(site.root)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert text[0].split()[:3] == ["NAME", "ROLE", "KIND"] and "LAST SEEN (UTC)" in text[0]
        assert text[1].split()[:7] == [
            "bin-3",
            "node",
            "bin-fill",
            "unix",
            "0a0b0c0d0e03",
            "1.0.0",
            "healthy",
        ]

        # the certificate: issued by the site CA to the node's identity, for client authentication
        ca = x509.load_pem_x509_certificate((site.root / "ca.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert (
            cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            == "node.riverside.bin-3"
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        key = serialization.load_pem_private_key((out / "node.key").read_bytes(), None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
        assert os.stat(out / "node.key").st_mode & 0o777 == 0o600

        # the ACL: the node writes only its own reports and reads only its own commands and updates
        acl = (site.root / "broker" / "acl").read_text()
        block = acl[acl.index("user node.riverside.bin-3") :].split("\n\n")[0].strip().splitlines()
        p = "cityedge/node/v1/riverside/bin-3"
        assert sorted(block[1:]) == sorted(
            [f"topic write {p}/{c}" for c in ("up", "status", "res")]
            + [f"topic read {p}/{c}" for c in ("cmd", "ota", "ota/data")]
        )

        # a node never heard from: exit 4 with a hint, and the inventory says so
        silent = provision(site, "0a0b0c0d0e99", "bin-99")
        assert silent["ok"], silent
        quiet = cli(
            "provision", "self-test", "-d", str(site.root), "--name", "bin-99", "--timeout-s", "3"
        )
        assert (
            quiet["_rc"] == 4 and quiet["code"] == "CE520" and "sent nothing" in str(quiet["error"])
        )
        assert "reloaded" in str(quiet["hint"])
        assert listed(site)["bin-99"]["self_test"] == "failed"
        unknown = cli("provision", "self-test", "-d", str(site.root), "--name", "bin-98")
        assert unknown["_rc"] == 1 and unknown["code"] == "CE500"

        # the same board again, while it runs its node (mpremote's Ctrl-C stops it): revision 2
        again = provision(site, "0a0b0c0d0e03", "bin-3", "--copy", device, "--self-test")
        assert again["ok"] and not again["created"] and again["device"]["revision"] == 2, (
            again,
            vm.tail(),
        )
        assert db.execute("SELECT count(*), max(revision) FROM devices").fetchone() == (2, 2)
        taken = provision(site, "0a0b0c0d0e04", "bin-3")
        assert (
            taken["_rc"] == 1
            and taken["code"] == "CE500"
            and "already belongs" in str(taken["error"])
        )
        db.close()

        # the image reads back with littlefs-python; the board got the same files through mpremote
        built = read_littlefs(Path(str(again["image"])).read_bytes())
        assert sorted(built) == again["files"]
        assert b'"node": "bin-3"' in built["config.json"]
        vm.stop()
        on_board = read_littlefs(board.read_bytes())
        assert {k: v for k, v in on_board.items() if not k.startswith("queue/")} == built
        assert any(k.startswith("queue/") for k in on_board)  # the reports it queued in flash
        # and the built image mounts in MicroPython
        mounted = folder / "mounted.img"
        mounted.write_bytes(Path(str(again["image"])).read_bytes())
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
        for running in reversed(procs):
            running.stop()  # before the folder goes


def test_a_board_lost_in_the_middle_of_the_copy_leaves_the_site_as_it_was(
    procs: list[Proc], tmp_path: Path
) -> None:
    site = init_site(tmp_path)
    start_site_mosquitto(procs, site)
    vm, device = start_vm(procs, tmp_path, tmp_path / "board.img")
    ok = provision(site, "0a0b0c0d0e01", "bin-1")  # one node already there, not on this board
    assert ok["ok"], ok
    before = snapshot(site.root, skip=("broker/data", "broker/run"))
    tool = subprocess.Popen(
        cityedge_argv(
            "provision", "node", "-d", str(site.root), "--hwid", "0a0b0c0d0e02", "--name", "bin-2",
            "--kind", "bin-fill", "--target", "unix", "--copy", device,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert tool.stderr is not None
    said = []
    for line in tool.stderr:  # piped: a line per step, and per file copied
        said.append(line)
        if line.startswith("copy: ") and "(4/" in line:  # three files are on the board
            vm.kill()  # the board's cable is pulled
            break
    _out, err = tool.communicate(timeout=120)
    said += err.splitlines(keepends=True)
    assert tool.returncode == 3, "".join(said)
    assert said[-2].startswith("CE510: mpremote could not copy onto") and said[-1].startswith(
        "  hint: "
    )
    assert snapshot(site.root, skip=("broker/data", "broker/run")) == before
    assert "bin-2" not in (site.root / "broker" / "acl").read_text()
    assert list(listed(site)) == ["bin-1"]


def test_broker_config_files_work_with_mosquitto_as_its_own_user(procs: list[Proc]) -> None:
    exe = mosquitto_path()
    assert exe is not None
    with reachable_dir() as folder:
        port, brain = free_port(), free_port()
        doc = cli(
            "broker-config", "--site", "riverside", "--gateway", "gw-1", "--out", str(folder / "broker"),
            "--port", str(port), "--brain-port", str(brain),
        )  # fmt: skip
        assert doc["ok"] and doc["notes"] == [], doc
        conf = Path(doc["conf"]).read_text()
        assert "user root" not in conf and all(
            w.startswith("/") for line in conf.splitlines() for w in line.split()[1:2] if "/" in w
        )
        proc = start("mosquitto-bc", [exe, "-c", doc["conf"]], folder)
        procs.append(proc)
        wait_port(port, proc=proc)
        wait_port(brain, proc=proc)
        if debian_way():
            assert runs_as(proc.pid) == "mosquitto", proc.tail()
            key = folder / "broker" / "server.key"
            assert key.stat().st_mode & 0o777 == 0o640
        # a gateway connects with its certificate: the broker read its key, CA and ACL
        gw = doc["gateways"]["gw-1"]
        connected: list[str] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1", protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(folder / "broker" / "ca.crt"))
        ctx.load_cert_chain(gw["cert"], gw["key"])
        c.tls_set_context(ctx)
        c.on_connect = lambda _c, _u, _f, rc, _p: connected.append(str(rc))
        c.connect("127.0.0.1", port)
        c.loop_start()
        deadline = time.monotonic() + 10
        while not connected and time.monotonic() < deadline:
            time.sleep(0.05)
        c.loop_stop()
        c.disconnect()
        assert connected == ["Success"], proc.tail()
        proc.stop()
