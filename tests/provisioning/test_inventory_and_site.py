"""Inventory by hardware id, the site folder, identities and ACL entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cityedge import brokerfiles
from provisioning.errors import ProvisionInputError
from provisioning.inventory import Inventory, normalize_hwid
from provisioning.site import Site, acl_probe_topic, gateway_node_acl, node_acl


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("AA:BB:CC:DD:EE:FF", "aabbccddeeff"),
        ("aa-bb-cc-dd-ee-ff", "aabbccddeeff"),
        ("e6614104 03 2b", "e6614104032b"),
    ],
)
def test_hwid_normalization(text: str, want: str) -> None:
    assert normalize_hwid(text) == want


@pytest.mark.parametrize("bad", ["", "zz:zz:zz", "abc", "a" * 65, "aa:bb:cc:dd:ee:fg"])
def test_bad_hwids_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(ProvisionInputError) as info:
        normalize_hwid(bad)
    assert info.value.hint and "MAC" in info.value.hint


def record(inv: Inventory, hwid: str, name: str, serial: str = "1") -> tuple[object, bool]:
    return inv.record(
        hwid=hwid,
        name=name,
        role="node",
        kind="bin-fill",
        target="esp32",
        identity=f"node.s.{name}",
        cert_serial=serial,
        cert_sha256="x",
        firmware="1.0.0",
    )


def test_a_known_board_is_updated_not_duplicated(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "inv.sqlite")
    d1, new1 = record(inv, "AA:BB:CC:00:00:01", "bin-1")
    d2, new2 = record(inv, "aabbcc000001", "bin-1", serial="2")
    assert (new1, new2) == (True, False)
    assert [(d.hwid, d.revision, d.cert_serial) for d in inv.all()] == [("aabbcc000001", 2, "2")]
    assert d1.first_provisioned == d2.first_provisioned  # type: ignore[attr-defined]
    renamed, _ = record(inv, "aabbcc000001", "bin-1b")
    assert renamed.name == "bin-1b" and len(inv.all()) == 1  # type: ignore[attr-defined]
    with pytest.raises(ProvisionInputError, match="already belongs to hardware id aabbcc000001"):
        record(inv, "aabbcc000002", "bin-1b")
    inv.close()


def test_site_init_refuses_to_overwrite_and_keeps_keys_private(tmp_path: Path) -> None:
    site = Site.init(tmp_path / "s", "riverside", "10.0.0.2", 8883)
    for secret in ("ca.key", "technician.key", "ota.key"):
        assert os.stat(site.root / secret).st_mode & 0o777 == 0o600, secret
    # the broker's own key: never world-readable; its group's when this machine has mosquitto's
    account = brokerfiles.broker_account()
    st = os.stat(site.root / "broker.key")
    if account is not None and os.geteuid() == 0:
        assert (st.st_mode & 0o777, st.st_gid) == (0o640, account.gid)
    assert st.st_mode & 0o007 == 0
    with pytest.raises(ProvisionInputError, match="already holds a site"):
        Site.init(tmp_path / "s", "riverside", "10.0.0.2")
    with pytest.raises(ProvisionInputError, match="not a site folder") as info:
        Site.open(tmp_path / "nowhere")
    assert "init-site" in (info.value.hint or "")
    assert Site.open(tmp_path / "s") == site
    assert "require_certificate true" in (site.root / "broker" / "nodes.conf").read_text()
    assert list(site.trusted_keys()) == ["riverside-ota-1"]
    with pytest.raises(ValueError, match="topic level"):
        Site.init(tmp_path / "t", "bad/site", "h")


def test_acl_entries() -> None:
    assert node_acl("s", "n").splitlines() == [
        "user node.s.n",
        "topic read cityedge/node/v1/s/n/cmd",
        "topic read cityedge/node/v1/s/n/ota",
        "topic read cityedge/node/v1/s/n/ota/data",
        "topic write cityedge/node/v1/s/n/up",
        "topic write cityedge/node/v1/s/n/status",
        "topic write cityedge/node/v1/s/n/res",
    ]
    gw = gateway_node_acl("s", "gw-1").splitlines()
    assert gw[0] == "user s.gw-1"
    assert (
        "topic read cityedge/node/v1/s/+/up" in gw
        and "topic write cityedge/node/v1/s/+/ota/data" in gw
    )


OLD_SCHEMA = """CREATE TABLE devices (hwid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
kind TEXT NOT NULL, target TEXT NOT NULL, identity TEXT NOT NULL, cert_serial TEXT NOT NULL,
cert_sha256 TEXT NOT NULL, firmware TEXT NOT NULL, revision INTEGER NOT NULL,
first_provisioned TEXT NOT NULL, last_provisioned TEXT NOT NULL)"""


def test_an_old_inventory_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "inv.sqlite")
    db.execute(OLD_SCHEMA)
    db.execute(
        "INSERT INTO devices VALUES ('0a0b0c0d0e01','bin-1','node','bin-fill','esp32','node.s.bin-1',"
        "'1','x','1.0.0',1,'2026-01-01T00:00:00+00:00','2026-01-01T00:00:00+00:00')"
    )
    db.commit()
    db.close()
    inv = Inventory(tmp_path / "inv.sqlite")
    (d,) = inv.all()
    assert (d.name, d.firmware, d.last_seen, d.self_test, d.report_interval_s) == (
        "bin-1",
        "1.0.0",
        None,
        None,
        None,
    )
    inv.close()


def test_what_nodes_say_and_the_self_test_are_kept(tmp_path: Path) -> None:
    import datetime as dt

    inv = Inventory(tmp_path / "inv.sqlite")
    record(inv, "0a0b0c0d0e01", "bin-1")
    t1 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    assert inv.seen("bin-1", at=t1, version="1.1.0", state="healthy")
    assert inv.seen("bin-1", at=t1 - dt.timedelta(hours=1))  # older: last seen stays
    assert not inv.seen("bin-99", at=t1)
    inv.self_tested("bin-1", False, t1)
    d = inv.by_name("bin-1")
    assert d is not None
    assert (d.firmware, d.state, d.last_seen) == ("1.1.0", "healthy", "2026-03-01T08:00:00+00:00")
    assert (d.self_test, d.self_test_at) == ("failed", "2026-03-01T08:00:00+00:00")
    # provisioned again: a new certificate and image, so the old verdict no longer holds
    again, _ = record(inv, "0a0b0c0d0e01", "bin-1", serial="2")
    assert again.self_test is None and again.last_seen == d.last_seen  # type: ignore[attr-defined]
    inv.close()


def test_the_broker_files_use_absolute_paths_and_name_the_acl_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    site = Site.init(Path("rel"), "riverside", "10.0.0.2", 18883)
    conf = (site.root / "broker" / "mosquitto.conf").read_text()
    paths = [
        w
        for line in conf.splitlines()
        if not line.startswith("#")
        for w in line.split()[1:]
        if "/" in w
    ]
    assert paths and all(p.startswith("/") for p in paths), paths
    assert "listener 18883\n" in conf and "pid_file /" in conf and "allow_anonymous false" in conf
    assert site.broker_pid_file == str(site.root / "broker" / "run" / "mosquitto.pid")
    g1 = site.acl_generation()
    acl = (site.root / "broker" / "acl").read_text()
    assert (
        acl.startswith(f"# generation {g1}:")
        and f"topic write {acl_probe_topic('riverside', g1)}" in acl
    )
    inv = site.inventory()
    record(inv, "0a0b0c0d0e01", "bin-1")
    inv.close()
    g2 = site.write_broker_files()
    assert g2 != g1 and site.write_broker_files() == g2  # the generation is the content's
    assert site.write_broker_files(pending=("node", "bin-2")) not in (g1, g2)
    assert "user node.riverside.bin-2" in (site.root / "broker" / "acl").read_text()
    assert site.write_broker_files() == g2


def test_reload_only_a_broker_the_tool_manages(tmp_path: Path) -> None:
    site = Site.init(tmp_path / "s", "riverside", "10.0.0.2", 18883)
    r = site.reload_broker()
    assert not r.sent and "absent" in r.how and "systemctl reload mosquitto" in r.how
    pid_file = Path(site.broker_pid_file or "")
    pid_file.write_text(f"{os.getpid()}\n")  # this process: not a mosquitto, never signalled
    r = site.reload_broker()
    assert not r.sent and "not mosquitto" in r.how
