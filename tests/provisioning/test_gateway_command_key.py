"""``provision gateway`` issues the gateway's command key and the site's delegation of it: the
key private (0600) and never printed, the delegation one the site's nodes accept for this
gateway only, and the mqtt source block naming both files."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cityedge.cli import app
from edge.clock import VirtualClock
from edge.node_mqtt.commands import load_command_key
from edge.node_mqtt.config import MqttSourceConfig
from protocols import delegation, signed
from provisioning.site import Site
from sim.localsite import free_port

runner = CliRunner()


def test_a_gateway_gets_a_command_key_its_nodes_obey(tmp_path: Path) -> None:
    site = Site.init(tmp_path / "site", "riverside", "127.0.0.1", free_port())
    gw = ["gateway", "-d", str(site.root), "--hwid", "02420a000021", "--name", "gw-1", "--json"]
    done = runner.invoke(app, ["provision", *gw, "--command-key-days", "30"])
    assert done.exit_code == 0, done.output
    doc: dict[str, Any] = json.loads(done.stdout)
    out = site.root / "gateways" / "gw-1"
    key_file, deleg_file = out / "command.key", out / "command-delegation.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in done.output and key_file.read_text() not in done.output

    site_keys = {
        k: signed.public_key_from_raw(signed.unb64url(v)) for k, v in site.trusted_keys().items()
    }
    envelope = json.loads(deleg_file.read_text())
    now = time.time()
    kid = doc["command_key"]["kid"]
    d = delegation.verify(
        envelope, site_keys=site_keys, site="riverside", gateway="gw-1", kid=kid, now=now
    )
    assert (
        29 * 86400 < d.expires_at - now <= 30 * 86400
        and doc["command_key"]["expires_at"] == d.expires_at
    )
    with pytest.raises(delegation.DelegationRefused) as err:
        delegation.verify(
            envelope, site_keys=site_keys, site="riverside", gateway="gw-2", kid=kid, now=now
        )
    assert err.value.reason == "wrong-gateway"  # a node of gw-2 refuses gw-1's key

    block = yaml.safe_load(doc["source_yaml"])[0]
    cfg = MqttSourceConfig.model_validate(
        block | {"nodes": [{"name": "gate-1", "kind": "gate-relay"}]}
    )
    assert cfg.commands is not None
    assert (cfg.commands.key_file, cfg.commands.delegation_file) == (key_file, deleg_file)
    loaded = load_command_key(cfg.commands, "gw-1", VirtualClock(start_wall=now).time())
    assert loaded.delegation.kid == kid

    # provisioned again: a new key under a new key id (a node's cache never mixes two keys)
    again = runner.invoke(app, ["provision", *gw])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["command_key"]["kid"] != kid
