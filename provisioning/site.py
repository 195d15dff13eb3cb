"""A site's provisioning folder: its certificate authority, the local broker's certificate and
ACL, the OTA signing key, the technician's certificate, and the device inventory::

    site.json            site id, local broker address, OTA key id
    ca.pem  ca.key       the site CA (protocols.pki); the key is 0600
    broker.pem/.key      the local broker's server certificate
    technician.pem/.key  the tool's own identity (reads node status for the self-test)
    ota.key              Ed25519 key that signs OTA manifests and node commands (0600)
    inventory.sqlite     devices by hardware id
    broker/acl           mosquitto ACL, regenerated from the inventory
    broker/nodes.conf    the mosquitto listener for nodes (TLS, client certificates, the ACL)
    devices/<name>/      what each provisioning produced (certificate, config, images, label)

MQTT identities are certificate common names (mosquitto ``use_identity_as_username``):
nodes ``node.<site>.<name>``, gateways ``<site>.<gateway>`` (:func:`protocols.pki.gateway_identity`),
the tool ``technician.<site>``. A node writes only its own up/status/res topics and reads only its
own cmd/ota topics; a gateway reads all node reports of its site and writes their cmd/ota.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import nodewire, pki, signed
from provisioning.errors import ProvisionInputError
from provisioning.inventory import Device, Inventory


def write_private(path: Path, data: bytes) -> None:
    """Write a secret with 0600 permissions from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def node_identity(site: str, node: str) -> str:
    return f"node.{site}.{node}"


def technician_identity(site: str) -> str:
    return f"technician.{site}"


def node_acl(site: str, node: str) -> str:
    t = nodewire.node_topic
    return pki.acl_block(
        node_identity(site, node),
        write=[t(site, node, c) for c in ("up", "status", "res")],
        read=[t(site, node, c) for c in ("cmd", "ota", "ota/data")],
    )


def gateway_node_acl(site: str, gateway: str) -> str:
    f = nodewire.site_filter
    return pki.acl_block(
        pki.gateway_identity(site, gateway),
        read=[f(site, c) for c in ("up", "status", "res")],
        write=[f(site, c) for c in ("cmd", "ota", "ota/data")],
    )


def technician_acl(site: str) -> str:
    f = nodewire.site_filter
    return pki.acl_block(
        technician_identity(site),
        read=[f(site, "status"), f(site, "up")],
        write=[f(site, "ota"), f(site, "ota/data")],
    )


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Site:
    root: Path
    site: str
    broker_host: str
    broker_port: int
    ota_kid: str

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path,
        site: str,
        broker_host: str,
        broker_port: int = 8883,
        ota_kid: str | None = None,
    ) -> Site:
        """Create a site folder; refuses to overwrite one (its CA signs every device)."""
        nodewire.node_prefix(site, "x")  # the site id must be a topic level
        if (root / "site.json").exists():
            raise ProvisionInputError(
                f"{root} already holds a site",
                hint="open it, or pick an empty folder for a new site",
            )
        root.mkdir(parents=True, exist_ok=True)
        kid = ota_kid or f"{site}-ota-1"
        s = cls(root, site, broker_host, broker_port, kid)
        ca_key, ca_cert = pki.make_ca(f"cityedge {site} CA")
        write_private(root / "ca.key", pki.key_pem(ca_key))
        (root / "ca.pem").write_bytes(pki.cert_pem(ca_cert))
        bkey, bcert = pki.issue(ca_key, ca_cert, "broker", client=False, server_names=[broker_host])
        write_private(root / "broker.key", pki.key_pem(bkey))
        (root / "broker.pem").write_bytes(pki.cert_pem(bcert))
        tkey, tcert = pki.issue(ca_key, ca_cert, technician_identity(site))
        write_private(root / "technician.key", pki.key_pem(tkey))
        (root / "technician.pem").write_bytes(pki.cert_pem(tcert))
        ota = Ed25519PrivateKey.generate()
        write_private(
            root / "ota.key",
            ota.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (root / "site.json").write_text(
            json.dumps(
                {
                    "site": site,
                    "broker_host": broker_host,
                    "broker_port": broker_port,
                    "ota_kid": kid,
                },
                indent=1,
            )
        )
        s.write_broker_files()
        return s

    @classmethod
    def open(cls, root: Path) -> Site:
        try:
            doc = json.loads((root / "site.json").read_text())
        except FileNotFoundError:
            raise ProvisionInputError(
                f"{root} is not a site folder (no site.json)",
                hint="run 'cityedge provision init-site' first, or pass --site-dir",
            ) from None
        return cls(root, doc["site"], doc["broker_host"], int(doc["broker_port"]), doc["ota_kid"])

    # -- keys and certificates -----------------------------------------------------------------

    def ca(self) -> tuple[pki.Key, x509.Certificate]:
        return pki.load_key((self.root / "ca.key").read_bytes()), pki.load_cert(
            (self.root / "ca.pem").read_bytes()
        )

    def ota_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key((self.root / "ota.key").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ProvisionInputError(f"{self.root / 'ota.key'} is not an Ed25519 key")
        return key

    def trusted_keys(self) -> dict[str, str]:
        """What nodes trust: key id -> raw public key (base64url)."""
        return {self.ota_kid: signed.b64url(signed.public_key_raw(self.ota_key()))}

    def inventory(self) -> Inventory:
        return Inventory(self.root / "inventory.sqlite")

    def device_dir(self, name: str) -> Path:
        return self.root / "devices" / name

    # -- the broker ----------------------------------------------------------------------------

    def acl_text(self, devices: list[Device]) -> str:
        blocks = [technician_acl(self.site)]
        for d in devices:
            if d.role == "node":
                blocks.append(node_acl(self.site, d.name))
            else:
                blocks.append(gateway_node_acl(self.site, d.name))
        return (
            "# generated by 'cityedge provision' from the inventory; do not edit\n\n"
            + "\n".join(blocks)
        )

    def broker_conf(self, listener: bool = True) -> str:
        """The mosquitto settings of the nodes' listener (reload mosquitto after changes)."""
        head = f"listener {self.broker_port}\n" if listener else ""
        r = self.root.resolve()
        return (
            f"{head}cafile {r}/ca.pem\ncertfile {r}/broker.pem\nkeyfile {r}/broker.key\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"acl_file {r}/broker/acl\n"
        )

    def write_broker_files(self) -> None:
        inv = self.inventory()
        try:
            devices = inv.all()
        finally:
            inv.close()
        (self.root / "broker").mkdir(exist_ok=True)
        (self.root / "broker" / "acl").write_text(self.acl_text(devices))
        (self.root / "broker" / "nodes.conf").write_text(self.broker_conf())
