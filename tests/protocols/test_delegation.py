"""Gateway command keys delegated by the site: the shared table (the node checks the same one,
``firmware/tests/test_delegation.py``), issuing, reading a delegation file, signing commands."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import delegation, signed
from tests.firmware.vectors import DIR, FAR, KEY, delegation_vectors

VECTORS: dict[str, Any] = json.loads((DIR / "delegation.json").read_text())
SITE_KEYS = {
    k: signed.public_key_from_raw(signed.unb64url(v)) for k, v in VECTORS["site_keys"].items()
}


def test_the_committed_table_is_current() -> None:
    assert json.loads(json.dumps(delegation_vectors())) == VECTORS


@pytest.mark.parametrize("case", VECTORS["commands"], ids=lambda c: c["name"])
def test_delegated_command_table(case: dict[str, Any]) -> None:
    def check() -> signed.Verified:
        return delegation.verify_command(
            case["data"],
            site_keys=SITE_KEYS,
            site=VECTORS["site"],
            gateway=case["gateway"],
            now=VECTORS["now"],
        )

    if case["refusal"] is None:
        assert json.loads(check().body) == {"node": "gate-1", "action": "open"}
        return
    with pytest.raises((delegation.DelegationRefused, signed.SignatureRefused)) as err:
        check()
    assert err.value.reason == case["refusal"]  # type: ignore[attr-defined]


def test_issue_read_and_sign_round_trip() -> None:
    gw = Ed25519PrivateKey.generate()
    data = delegation.issue(
        site_key=KEY,
        site_kid="ops-1",
        site="riverside",
        gateway="gw-1",
        gateway_key=gw.public_key(),
        expires_at=FAR,
    )
    d = delegation.read(data)
    assert (d.site, d.gateway, d.expires_at) == ("riverside", "gw-1", FAR)
    assert d.key == signed.public_key_raw(gw) and d.kid.startswith("gw-1-cmd-")
    command = delegation.sign_command(
        b'{"node":"gate-1","action":"close"}', key=gw, delegation=d, expires_at=FAR
    )
    got = delegation.verify_command(
        command, site_keys=SITE_KEYS, site="riverside", gateway="gw-1", now=FAR - 60
    )
    assert got.kid == d.kid


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"purpose": "command"}', '{"purpose": "delegation", "exp": 1}', "x" * 5000],
)
def test_reading_something_else_is_refused(text: str) -> None:
    with pytest.raises(delegation.DelegationRefused) as err:
        delegation.read(text)
    assert err.value.reason == "bad-delegation"


def test_a_command_key_id_names_the_gateway_and_fits_a_key_id() -> None:
    kid = delegation.command_kid("g" * 63, bytes(32))
    assert len(kid) <= 64 and kid.startswith("g" * 40 + "-cmd-")
