"""Inventory by hardware id, the site folder, identities and ACL entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioning.errors import ProvisionInputError
from provisioning.inventory import Inventory, normalize_hwid
from provisioning.site import Site, gateway_node_acl, node_acl


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
    for secret in ("ca.key", "broker.key", "technician.key", "ota.key"):
        assert os.stat(site.root / secret).st_mode & 0o777 == 0o600, secret
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
