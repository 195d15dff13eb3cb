"""A site's provisioning folder: its certificate authority, the local broker's certificate and
ACL, the OTA signing key, the technician's certificate, and the device inventory::

    site.json            site id, local broker address, OTA key id
    ca.pem  ca.key       the site CA (protocols.pki); the key is 0600
    broker.pem/.key      the local broker's server certificate
    technician.pem/.key  the tool's own identity (reads node status for the self-test)
    ota.key              Ed25519 key that signs OTA manifests, node commands and the gateways'
                         command-key delegations (0600)
    inventory.sqlite     devices by hardware id
    broker/acl           mosquitto ACL, regenerated from the inventory
    broker/nodes.conf    the mosquitto listener for nodes (TLS, client certificates, the ACL):
                         include it in a broker of your own (Debian: /etc/mosquitto/conf.d/)
    broker/mosquitto.conf  or run this one: a whole site broker (nodes.conf, persistence in
                         broker/data/, pid file in broker/run/)
    devices/<name>/      what each provisioning produced (certificate, config, images, label)

Every path in the broker's files is absolute. mosquitto started as root (as Debian starts it)
drops to its own user before it reads them: ``broker.key`` is 0640 with that user's group
(never world-readable), ``broker/data`` and ``broker/run`` are its own
(:mod:`cityedge.brokerfiles`); what this user may not arrange is said, with the command.

The broker takes a new ACL when it reloads (SIGHUP). The tool sends that itself when it
manages the broker: ``broker_pid_file`` (``site.json``; by default the pid file of
``broker/mosquitto.conf``) names a running mosquitto it may signal. Otherwise a person reloads
it (``systemctl reload mosquitto``). Either way the tool knows when the broker has the new
ACL: the ACL's first line names its generation (a hash of the rest), and the technician's block
lets it write ``cityedge/node/v1/<site>/_acl/<generation>`` (a level no node can be named): a
QoS 1 publish there is "not authorized" (MQTT 5 PUBACK) until the broker has read this file.

MQTT identities are certificate common names (mosquitto ``use_identity_as_username``):
nodes ``node.<site>.<name>``, gateways ``<site>.<gateway>`` (:func:`protocols.pki.gateway_identity`),
the tool ``technician.<site>``. A node writes only its own up/status/res topics and reads only its
own cmd/ota topics; a gateway reads all node reports of its site and writes their cmd/ota.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cityedge import brokerfiles
from protocols import delegation, nodewire, pki, signed
from provisioning.errors import ProvisionInputError
from provisioning.inventory import Inventory


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


def acl_probe_topic(site: str, generation: str) -> str:
    """Where the tool may publish once the broker has ACL ``generation`` (no node has this
    name: a node's name starts with a letter or digit)."""
    return f"{nodewire.ROOT}/{site}/_acl/{generation}"


def technician_acl(site: str, generation: str | None = None) -> str:
    f = nodewire.site_filter
    probe = [acl_probe_topic(site, generation)] if generation else []
    return pki.acl_block(
        technician_identity(site),
        read=[f(site, "status"), f(site, "up")],
        write=[f(site, "ota"), f(site, "ota/data"), *probe],
    )


@dataclass(frozen=True)
class Reload:
    """What :meth:`Site.reload_broker` did: ``sent`` True when this tool signalled the broker."""

    sent: bool
    how: str


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Site:
    root: Path
    site: str
    broker_host: str
    broker_port: int
    ota_kid: str
    label_url: str | None = None  # e.g. https://assets.example.org/riverside/{name}
    broker_pid_file: str | None = None  # a mosquitto this tool reloads (SIGHUP) after changes
    notes: list[str] = field(default_factory=list, compare=False)  # for the technician

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        root: Path,
        site: str,
        broker_host: str,
        broker_port: int = 8883,
        ota_kid: str | None = None,
        label_url: str | None = None,
        broker_pid_file: Path | None = None,
    ) -> Site:
        """Create a site folder; refuses to overwrite one (its CA signs every device).
        ``broker_pid_file``: the pid file of the site's mosquitto, when it is not the one of
        ``broker/mosquitto.conf`` (Debian: ``/run/mosquitto/mosquitto.pid``)."""
        nodewire.node_prefix(site, "x")  # the site id must be a topic level
        if (root / "site.json").exists():
            raise ProvisionInputError(
                f"{root} already holds a site",
                hint="open it, or pick an empty folder for a new site",
            )
        if label_url is not None:
            from provisioning.label import check_url_template

            check_url_template(label_url)
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        kid = ota_kid or f"{site}-ota-1"
        pid_file = (
            str(broker_pid_file.resolve())
            if broker_pid_file
            else str(root / "broker" / "run" / "mosquitto.pid")
        )
        s = cls(root, site, broker_host, broker_port, kid, label_url, pid_file)
        ca_key, ca_cert = pki.make_ca(f"cityedge {site} CA")
        write_private(root / "ca.key", pki.key_pem(ca_key))
        (root / "ca.pem").write_bytes(pki.cert_pem(ca_cert))
        bkey, bcert = pki.issue(ca_key, ca_cert, "broker", client=False, server_names=[broker_host])
        write_private(root / "broker.key", pki.key_pem(bkey))
        (root / "broker.pem").write_bytes(pki.cert_pem(bcert))
        account = brokerfiles.broker_account()
        todo = brokerfiles.share_with_broker(root / "broker.key", account)
        if todo:
            s.notes.append(f"mosquitto must read {root / 'broker.key'}: {todo}")
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
                    "label_url": label_url,
                    "broker_pid_file": pid_file,
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
        return cls(
            root.resolve(),
            doc["site"],
            doc["broker_host"],
            int(doc["broker_port"]),
            doc["ota_kid"],
            doc.get("label_url"),
            doc.get("broker_pid_file"),
        )

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

    def delegate_command_key(
        self, gateway: str, key: Ed25519PublicKey, expires_at: int
    ) -> delegation.Delegation:
        """The site's delegation of ``key`` to ``gateway``: its nodes then obey commands signed
        with it (:mod:`protocols.delegation`)."""
        data = delegation.issue(
            site_key=self.ota_key(),
            site_kid=self.ota_kid,
            site=self.site,
            gateway=gateway,
            gateway_key=key,
            expires_at=expires_at,
        )
        return delegation.read(data)

    def trusted_keys(self) -> dict[str, str]:
        """What nodes trust: key id -> raw public key (base64url)."""
        return {self.ota_kid: signed.b64url(signed.public_key_raw(self.ota_key()))}

    def inventory(self) -> Inventory:
        return Inventory(self.root / "inventory.sqlite")

    def device_dir(self, name: str) -> Path:
        return self.root / "devices" / name

    # -- the broker ----------------------------------------------------------------------------

    def acl_text(self, devices: Iterable[tuple[str, str]]) -> str:
        """The ACL for ``devices`` (role, name), in that order."""
        blocks = []
        for role, name in devices:
            if role == "node":
                blocks.append(node_acl(self.site, name))
            else:
                blocks.append(gateway_node_acl(self.site, name))
        body = "\n".join(blocks)
        generation = hashlib.sha256(body.encode()).hexdigest()[:16]
        return (
            f"# generation {generation}: generated by 'cityedge provision' from the inventory; "
            "do not edit\n\n" + "\n".join([technician_acl(self.site, generation), *blocks])
        )

    def acl_generation(self) -> str:
        """The generation of the ACL file as written (what the broker must take)."""
        first = (self.root / "broker" / "acl").read_text().split("\n", 1)[0]
        return first.removeprefix("# generation ").split(":", 1)[0]

    def broker_conf(self, listener: bool = True) -> str:
        """The mosquitto settings of the nodes' listener (reload mosquitto after changes)."""
        head = f"listener {self.broker_port}\n" if listener else ""
        r = self.root.resolve()
        return (
            f"{head}cafile {r}/ca.pem\ncertfile {r}/broker.pem\nkeyfile {r}/broker.key\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"acl_file {r}/broker/acl\n"
        )

    def standalone_conf(self) -> str:
        """``broker/mosquitto.conf``: a whole site broker around :meth:`broker_conf`."""
        r = self.root.resolve()
        account = brokerfiles.broker_account()
        user, blocked = brokerfiles.run_as_line(r, account)
        if blocked:
            self.notes.append(blocked)
        data = brokerfiles.broker_folder(r / "broker" / "data", account)
        run = brokerfiles.broker_folder(r / "broker" / "run", account)
        return (
            "# generated by 'cityedge provision' for site "
            f"{self.site}: mosquitto -c {r}/broker/mosquitto.conf\n"
            "# it reloads on SIGHUP, which 'cityedge provision' sends after each change\n"
            f"{user}pid_file {self.broker_pid_file or run / 'mosquitto.pid'}\n"
            f"persistence true\npersistence_location {data}/\nlog_dest stdout\n"
            "allow_anonymous false\n" + self.broker_conf()
        )

    def write_broker_files(self, pending: tuple[str, str] | None = None) -> str:
        """Regenerate the ACL (and the broker's conf files) from the inventory, with the
        ``pending`` device (role, name) not yet in it; returns the ACL's generation."""
        inv = self.inventory()
        try:
            devices = [(d.role, d.name) for d in inv.all()]
        finally:
            inv.close()
        if pending is not None and pending not in devices:
            devices = sorted([*devices, pending])
        folder = self.root / "broker"
        folder.mkdir(exist_ok=True)
        acl = self.acl_text(devices)
        tmp = folder / "acl.tmp"
        tmp.write_text(acl)
        tmp.replace(folder / "acl")  # a reload never reads half a file
        (folder / "nodes.conf").write_text(self.broker_conf())
        (folder / "mosquitto.conf").write_text(self.standalone_conf())
        return self.acl_generation()

    def reload_broker(self) -> Reload:
        """SIGHUP to the site's mosquitto when this tool manages it (its pid file names a running
        mosquitto this user may signal); otherwise say how to reload it."""
        ask = "reload the site broker (sudo systemctl reload mosquitto, or kill -HUP its pid)"
        if not self.broker_pid_file:
            return Reload(False, ask)
        pid_file = Path(self.broker_pid_file)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return Reload(False, f"no broker of this tool runs ({pid_file} absent): {ask}")
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return Reload(False, f"the broker of {pid_file} (pid {pid}) is not running: {ask}")
        if comm != "mosquitto":
            return Reload(False, f"pid {pid} of {pid_file} is {comm}, not mosquitto: {ask}")
        try:
            os.kill(pid, signal.SIGHUP)
        except PermissionError:
            return Reload(False, f"this user may not signal mosquitto (pid {pid}): {ask}")
        except ProcessLookupError:
            return Reload(False, f"mosquitto (pid {pid}) has just stopped: {ask}")
        return Reload(True, f"sent SIGHUP to mosquitto (pid {pid})")
