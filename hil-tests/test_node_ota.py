"""Signed OTA on a node running on the MicroPython unix port, over the site broker: unsigned,
wrongly signed, downgraded and corrupt updates are refused; a good one is installed and the node
restarts into it; an image that never reports healthy is rolled back after its boots run out."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nodes import (
    NodeClient,
    NodeRunner,
    fill_world,
    make_site,
    provision_bin,
    start_site_broker,
    technician,
)

from protocols import nodewire
from provisioning import image, ota
from provisioning.site import Site
from sim.localsite import Proc, cityedge_argv

RESET = 75  # firmware/sim/machine.py: machine.reset() ends the process with this code
NodeState = nodewire.NodeState


def send(site: Site, upd: ota.Update) -> None:
    ota.publish_update(
        upd,
        host="127.0.0.1",
        port=site.broker_port,
        site=site.site,
        node="bin-2",
        ca=str(site.root / "ca.pem"),
        cert=str(site.root / "technician.pem"),
        key=str(site.root / "technician.key"),
    )


def states(tech: NodeClient, since: float) -> list[tuple[NodeState, tuple[int, int, int], str]]:
    return [(s.state, s.version, s.reason) for s in tech.statuses(since)]


def wait_state(
    tech: NodeClient, node: NodeRunner, since: float, state: NodeState, timeout_s: float = 30
) -> nodewire.StatusFrame:
    tech.wait_for(
        lambda: any(s[0] is state for s in states(tech, since)),
        timeout_s,
        f"status {state.name}",
        node.log,
    )
    return next(s for s in tech.statuses(since) if s.state is state)


def broken_update(site: Site, version: str) -> ota.Update:
    """A build whose node module fails at import: it can never report healthy."""
    files = image.compile_firmware(image.target("unix"), version)
    app = {
        k.removeprefix("app/"): v
        for k, v in files.items()
        if k.startswith("app/") and k != "app/VERSION"
    }
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "node.py"
        bad.write_text("raise RuntimeError('this build is broken')\n")
        subprocess.run(
            [image.tool("mpy-cross", "firmware"), "-o", str(Path(tmp) / "node.mpy"), str(bad)],
            check=True,
        )
        app["cenode/node.mpy"] = (Path(tmp) / "node.mpy").read_bytes()
    return ota.make_update(
        version, app, key=site.ota_key(), kid=site.ota_kid, expires_at=int(time.time()) + 3600
    )


def test_ota_refusals_a_good_update_and_a_rollback(tmp_path: Path, procs: list[Proc]) -> None:
    site = make_site(tmp_path)
    doc = provision_bin(site, "0a0b0c0d0e02", "bin-2")
    assert doc["ok"], doc
    broker = start_site_broker(site, tmp_path / "broker")
    procs.append(broker.proc)
    node = NodeRunner.from_image(procs, tmp_path / "node", Path(doc["image"]), "bin-2")
    node.world(**fill_world(30))
    tech = technician(site, "bin-2")
    try:
        t0 = time.monotonic()
        node.boot()
        assert wait_state(tech, node, t0, NodeState.HEALTHY).version == (1, 0, 0)
        exp = int(time.time()) + 3600

        # refused: unsigned, wrongly signed, downgrade, corrupt
        good = ota.build_update(
            "1.1.0", target_name="unix", key=site.ota_key(), kid=site.ota_kid, expires_at=exp
        )
        stranger = Ed25519PrivateKey.generate()
        bad_sig = ota.make_update(
            "1.1.0", {"cenode/x.py": b""}, key=stranger, kid=site.ota_kid, expires_at=exp
        )
        older = ota.build_update(
            "0.9.0", target_name="unix", key=site.ota_key(), kid=site.ota_kid, expires_at=exp
        )
        flipped = bytearray(good.image)
        flipped[len(flipped) // 2] ^= 0x01
        cases = [
            ("unsigned", ota.Update("1.1.0", good.image, ota.manifest_body("1.1.0", good.image))),
            ("bad-signature", bad_sig),
            ("downgrade", older),
            ("corrupt", ota.Update("1.1.0", bytes(flipped), good.manifest)),
        ]
        for reason, upd in cases:
            since = time.monotonic()
            send(site, upd)
            refused = wait_state(tech, node, since, NodeState.OTA_REFUSED)
            assert refused.reason.startswith(reason), (reason, refused.reason, node.log())
            assert refused.version == (1, 0, 0)
        assert node.proc is not None and node.proc.alive(), node.log()

        # good: the real command builds, signs and sends it, and waits for the node's verdict
        # while the node installs, restarts (the board's reset: booted again here) and reports
        since = time.monotonic()
        tool = subprocess.Popen(
            cityedge_argv(
                "provision", "ota", "-d", str(site.root), "--firmware-version", "1.1.0",
                "--target", "unix", "--node", "bin-2", "--wait-s", "120", "--json",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            assert wait_state(tech, node, since, NodeState.OTA_APPLIED).reason == "1.1.0"
            assert node.wait_exit(30) == RESET, node.log()
            since = time.monotonic()
            node.boot()
            healthy = wait_state(tech, node, since, NodeState.HEALTHY)
            assert healthy.version == (1, 1, 0)
            out, _ = tool.communicate(timeout=120)
        finally:
            if tool.poll() is None:
                tool.kill()
        sent = json.loads(out)
        assert tool.returncode == 0 and sent["ok"], sent
        assert sent["nodes"]["bin-2"]["verdict"] == "kept" and sent["nodes"]["bin-2"]["chunks"] > 1

        # never healthy: installed, then it crashes at every boot; the third boot rolls back
        since = time.monotonic()
        send(site, broken_update(site, "1.2.0"))
        wait_state(tech, node, since, NodeState.OTA_APPLIED)
        assert node.wait_exit(30) == RESET, node.log()
        for _ in range(2):
            node.boot()
            assert node.wait_exit(30) not in (0, RESET), node.log()
            assert "this build is broken" in node.log()
        since = time.monotonic()
        node.boot()
        rolled = wait_state(tech, node, since, NodeState.ROLLED_BACK)
        assert rolled.version == (1, 1, 0) and rolled.reason == "rolled back from 1.2.0"
        assert wait_state(tech, node, since, NodeState.HEALTHY).version == (1, 1, 0)
        assert [s[0] for s in states(tech, since)][:2] == [NodeState.ROLLED_BACK, NodeState.HEALTHY]
        # and the fill levels keep coming from the old firmware
        tech.wait_for(
            lambda: len(tech.of(nodewire.ReadingsFrame, since)) >= 2,
            20,
            "readings after the rollback",
            node.log,
        )
    finally:
        tech.close()
