"""Wrong settings and failed steps of ``provision node|gateway|ota``: each is refused with a code
and a hint, and the site is as it was: the same files with the same bytes (the inventory's
SQLite file included), no certificate, no device folder, no ACL entry.

The failed steps are real: mpremote against a peer that hangs up, esptool on a device that is
not a board, a site broker that is not there."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cityedge.cli import app
from provisioning.site import Site
from sim.localsite import free_port
from tests.provisioning.balena_standin import TOKEN, BalenaStandIn
from tests.provisioning.test_image import esp32_firmware

runner = CliRunner()


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder below ``root``: its mode and, for files, its bytes' hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        what = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = f"{st.st_mode:o} {what}"
    return out


class HangUp:
    """A 'board' that accepts the connection and closes it: mpremote fails after the tool has
    built and staged everything."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.recv(64)
            conn.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site.init(tmp_path / "site", "riverside", "127.0.0.1", free_port())
    for argv in (
        ["node", "--hwid", "0a0b0c0d0e01", "--name", "bin-1", "--kind", "bin-fill"],
        ["gateway", "--hwid", "02420a000021", "--name", "gw-1"],
    ):
        done = runner.invoke(app, ["provision", *argv, "-d", str(s.root), "--json"])
        assert done.exit_code == 0, done.output
    return s


def rows(
    site: Site, tmp: Path, peer: HangUp, balena: BalenaStandIn
) -> list[tuple[str, list[str], str, str]]:
    fw = esp32_firmware(tmp / "fw.bin")
    (tmp / "not-fw.bin").write_bytes(b"\x7fELF not an ESP32 image")
    node = ["node", "--hwid", "0a0b0c0d0e09", "--name", "bin-9", "--kind", "bin-fill"]
    ota = ["ota", "--firmware-version", "1.1.0"]
    return [
        # (what, argv after 'provision', code, words of the message or hint)
        ("setting not a number", [*node, "--set", "full_mm=abc"], "CE500", "expected a number of mm"),
        ("setting misspelt", [*node, "--set", "fullmm=200"], "CE500", "did you mean 'full_mm'"),
        ("setting in another unit", [*node, "--set", "full_mm=20cm"], "CE500", "in mm, not cm"),
        ("setting out of range", [*node, "--set", "pings=40"], "CE500", "pings must be 1-15"),
        ("settings contradict", [*node, "--set", "empty_mm=300", "--set", "full_mm=400"], "CE500", "must be larger"),
        ("pin out of range", [*node, "--set", "pins.echo=99"], "CE500", "pins.echo must be 0-48"),
        ("setting of another app", [*node, "--set", "samples=5"], "CE500", "not a setting of a bin-fill"),
        ("bad hardware id", ["node", "--hwid", "zz", "--name", "bin-9", "--kind", "water"], "CE500", "hex digits"),
        ("name of another board", ["node", "--hwid", "0a0b0c0d0e09", "--name", "bin-1", "--kind", "water"], "CE500", "already belongs"),
        ("unknown kind", [*node[:-1], "toaster"], "CE500", "unknown node kind"),
        ("unknown target", [*node, "--target", "esp8266"], "CE500", "unknown target"),
        ("wifi without password", [*node, "--wifi-ssid", "depot"], "CE500", "--wifi-psk"),
        ("flash without firmware", [*node, "--port", "/dev/null"], "CE500", "--firmware"),
        ("not a firmware file", [*node, "--firmware", str(tmp / "not-fw.bin")], "CE500", "not an ESP32 firmware"),
        ("no such serial port", [*node, "--firmware", str(fw), "--port", "/dev/ttyUSB9"], "CE004", "/dev/ttyUSB9"),
        ("nothing at the copy target", [*node, "--target", "unix", "--copy", f"socket://127.0.0.1:{free_port()}"], "CE510", "nothing answers"),
        ("copy fails mid-way", [*node, "--target", "unix", "--copy", f"socket://127.0.0.1:{peer.port}"], "CE510", "mpremote could not copy"),
        ("flash fails mid-way", [*node, "--firmware", str(fw), "--port", "/dev/null"], "CE510", "flashing over /dev/null failed"),
        ("gateway bad hardware id", ["gateway", "--hwid", "g", "--name", "gw-2"], "CE500", "hex digits"),
        ("gateway takes a node's name", ["gateway", "--hwid", "0a0b0c0d0e01", "--name", "bin-1"], "CE500", "not a gateway"),
        ("gateway fleet without token", ["gateway", "--hwid", "02420a000022", "--name", "gw-2", "--fleet", "org/f"], "CE500", "BALENA_TOKEN"),
        ("gateway fleet unknown", ["gateway", "--hwid", "02420a000022", "--name", "gw-2", "--fleet", "cityedge/nope", "--balena-token", TOKEN, "--balena-api", balena.url], "CE500", "no balena fleet"),
        ("gateway command key for 0 days", ["gateway", "--hwid", "02420a000022", "--name", "gw-2", "--command-key-days", "0"], "CE500", "--command-key-days"),
        ("ota bad version", ["ota", "--firmware-version", "1.1"], "CE500", "MAJOR.MINOR.PATCH"),
        ("ota no target", ota, "CE500", "--target"),
        ("ota unknown node", [*ota, "--node", "bin-99"], "CE500", "no node 'bin-99'"),
        ("ota to a gateway", [*ota, "--node", "gw-1"], "CE500", "no node 'gw-1'"),
        ("ota for another target", [*ota, "--node", "bin-1", "--target", "unix"], "CE500", "runs the esp32 target"),
        ("ota, site broker away", [*ota, "--node", "bin-1"], "CE510", "cannot reach the site broker"),
    ]  # fmt: skip


@pytest.fixture
def balena() -> Iterator[BalenaStandIn]:
    s = BalenaStandIn()
    yield s
    s.close()


def test_refused_before_writing_and_the_site_is_unchanged(
    site: Site, tmp_path: Path, balena: BalenaStandIn
) -> None:
    peer = HangUp()
    before = snapshot(site.root)
    assert "devices/bin-1/node.key" in before and "gateways/gw-1/gateway.key" in before
    report = []
    try:
        for what, argv, code, words in rows(site, tmp_path, peer, balena):
            done = runner.invoke(app, ["provision", *argv, "-d", str(site.root), "--json"])
            doc: dict[str, Any] = json.loads(done.stdout)
            text = f"{doc.get('error')} / {doc.get('hint')}"
            report.append(f"{what:<30} {doc.get('code')}  {text}")
            assert doc["ok"] is False and doc["code"] == code, (what, doc)
            assert done.exit_code == doc["exit"] and doc["hint"], (what, doc)
            assert words in text, (what, words, text)
            assert snapshot(site.root) == before, f"{what}: the site changed"
    finally:
        peer.close()
    print("\n".join(report))  # the table, for the record (pytest -s)
    acl = (site.root / "broker" / "acl").read_text()
    assert "bin-9" not in acl and "gw-2" not in acl
    listed = json.loads(
        runner.invoke(app, ["provision", "list", "-d", str(site.root), "--json"]).stdout
    )
    assert [d["name"] for d in listed["devices"]] == ["gw-1", "bin-1"]
