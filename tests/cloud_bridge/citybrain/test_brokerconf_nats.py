"""``broker-config --engine nats``: the users and permissions every node includes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloud_bridge.citybrain.brokerconf import nats_gateway_user, write_nats_auth


def test_a_gateway_may_publish_below_its_prefix_and_read_its_commands_only() -> None:
    # a '.' inside a level is '//' in NATS subjects (as its MQTT layer maps topics)
    assert nats_gateway_user("riverside", "gw.7") == (
        '    {user: "CN=riverside.gw.7", allowed_connection_types: ["MQTT"], permissions: {'
        'publish: {allow: ["cityedge.v1.riverside.gw//7.>"]}, '
        'subscribe: {allow: ["cityedge.v1.riverside.gw//7.cmd.req", "cityedge.host.>"]}}}'
    )


def test_files_keys_and_password_are_private(tmp_path: Path) -> None:
    files = write_nats_auth(tmp_path / "out", site="s", gateways=["gw-1", "gw-2"])
    auth = files.auth.read_text()
    assert auth.count('allowed_connection_types: ["MQTT"]') == 2
    assert '{user: "city-brain", password: "' in auth
    assert "$JS.API.STREAM.DELETE" not in auth and '"$JS.API.>"' not in auth
    password = files.brain_password.read_text().strip()
    assert len(password) >= 32 and password in auth
    assert "verify_and_map: true" in files.mqtt_tls.read_text()
    for private in (files.auth, files.brain_password, *(f.key for f in files.gateways.values())):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, private
