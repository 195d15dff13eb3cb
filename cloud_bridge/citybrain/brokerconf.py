"""A mosquitto configuration for a site: TLS with client certificates and a per-gateway ACL.

:func:`write_site_broker` makes, in one folder: the site CA, the broker's server certificate,
a client certificate per gateway (common name ``{site}.{gateway}``, the MQTT user name through
``use_identity_as_username``), the city brain's own client CA and its certificate, the ACL file
and ``mosquitto.conf``.

Two listeners, because a client id is one namespace across the broker and whoever connects
with a client id already in use closes that client's connection (and fires its will):

- ``port`` is for gateways: only certificates of the site CA, and ``use_username_as_clientid``
  replaces whatever client id a gateway sends with its certificate's common name. A gateway can
  hold only its own session; gw-02's certificate can never knock gw-01 offline.
- ``brain_port`` is for the city brain's clients (ingest workers, ``cityedge command``): they
  share one identity and choose their client ids, so this listener admits only certificates of
  the city brain's own CA (``brain-ca.crt``), which never signs a gateway's. The server
  certificate is the same; clients on either port verify it with ``ca.crt``.

Under the ACL a gateway may publish only below ``cityedge/v1/{site}/{gateway}/`` and read only
its own ``cmd/req`` (:func:`protocols.pki.gateway_acl`); the city brain reads the whole tree and
may publish command requests. Nobody connects without a certificate.

Private keys are written with mode 0600 and never printed; the one the broker reads
(``server.key``) is 0640 with the broker's group, since mosquitto started as root (as Debian
starts it) drops to its own user before it loads it (:mod:`cityedge.brokerfiles`). Persistence
goes to ``data/``, which belongs to that user. Every path in ``mosquitto.conf`` is absolute (a
broker started by systemd runs in ``/``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from cityedge import brokerfiles
from protocols import pki, topics

CITY_BRAIN = "city-brain"


@dataclass(frozen=True)
class ClientFiles:
    name: str
    cert: Path
    key: Path


@dataclass
class SiteBroker:
    folder: Path
    conf: Path
    ca: Path  # the site CA: signs the server and the gateways; every client verifies with it
    acl: Path
    port: int  # gateways
    brain_port: int  # the city brain's clients
    brain_ca: Path  # signs the city brain's client certificates only
    gateways: dict[str, ClientFiles] = field(default_factory=dict)
    city_brain: ClientFiles | None = None
    notes: list[str] = field(default_factory=list)  # what a person must do for the broker


def _write_key(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def city_brain_acl() -> str:
    return pki.acl_block(
        CITY_BRAIN,
        read=[topics.SUBSCRIBE_ALL],
        write=[topics.COMMAND_REQUEST_FILTER],
        readwrite=[topics.HOST_FILTER],
    )


def write_site_broker(
    folder: Path,
    *,
    site: str,
    gateways: Sequence[str],
    port: int = 8883,
    brain_port: int | None = None,
    bind: str = "0.0.0.0",  # noqa: S104 - a broker listens for gateways on the network
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
    extra_conf: str = "",
) -> SiteBroker:
    """Write CAs, certificates, ACL and ``mosquitto.conf`` into ``folder`` (made if missing);
    ``brain_port`` defaults to ``port + 1``."""
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    account = brokerfiles.broker_account()

    def authority(common_name: str, stem: str) -> tuple[pki.Key, x509.Certificate, Path]:
        key, cert = pki.make_ca(common_name)
        path = folder / f"{stem}.crt"
        path.write_bytes(pki.cert_pem(cert))
        _write_key(folder / f"{stem}.key", pki.key_pem(key))
        return key, cert, path

    ca_key, ca_cert, ca = authority(f"cityedge {site} CA", "ca")
    brain_key, brain_cert, brain_ca = authority(f"cityedge {site} city-brain CA", "brain-ca")
    skey, scert = pki.issue(ca_key, ca_cert, "broker", client=False, server_names=server_names)
    (folder / "server.crt").write_bytes(pki.cert_pem(scert))
    _write_key(folder / "server.key", pki.key_pem(skey))
    shared = brokerfiles.share_with_broker(folder / "server.key", account)

    def client(
        name: str, stem: str, issuer: tuple[pki.Key, x509.Certificate] = (ca_key, ca_cert)
    ) -> ClientFiles:
        key, cert = pki.issue(*issuer, name)
        files = ClientFiles(name, folder / f"{stem}.crt", folder / f"{stem}.key")
        files.cert.write_bytes(pki.cert_pem(cert))
        _write_key(files.key, pki.key_pem(key))
        return files

    brain_port = port + 1 if brain_port is None else brain_port
    result = SiteBroker(
        folder, folder / "mosquitto.conf", ca, folder / "acl", port, brain_port, brain_ca
    )
    blocks = [city_brain_acl()]
    for gw in gateways:
        result.gateways[gw] = client(pki.gateway_identity(site, gw), f"gateway-{gw}")
        # a gateway also hears the ingest's heartbeats (it may wait for them: wait_for_ingest)
        blocks.append(pki.gateway_acl(site, gw) + f"topic read {topics.HOST_FILTER}\n")
    result.city_brain = client(CITY_BRAIN, CITY_BRAIN, (brain_key, brain_cert))
    result.acl.write_text("\n".join(blocks))
    user, blocked = brokerfiles.run_as_line(folder, account)
    result.notes += [
        n for n in (blocked, shared and f"the broker must read server.key: {shared}") if n
    ]
    data = brokerfiles.broker_folder(folder / "data", account)

    def listener(listen_port: int, client_ca: Path) -> str:
        return (
            f"listener {listen_port} {bind}\n"
            f"cafile {client_ca}\n"
            f"certfile {folder / 'server.crt'}\n"
            f"keyfile {folder / 'server.key'}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            "tls_version tlsv1.2\n"
        )

    result.conf.write_text(
        f"# generated by cityedge broker-config for site {site}\n"
        f"{user}"
        "per_listener_settings false\n"
        "# gateways: the client id is the certificate's common name, so no gateway can take over\n"
        "# another's session (and fire its will) by sending its client id\n"
        f"{listener(port, ca)}"
        "use_username_as_clientid true\n"
        "# the city brain's clients (ingest workers, commands) choose their client ids: only\n"
        "# certificates of the city brain's own CA are admitted here\n"
        f"{listener(brain_port, brain_ca)}"
        "allow_anonymous false\n"
        f"acl_file {result.acl}\n"
        # The ingest's queue must hold what gateways drain after an outage (QoS 1 beyond it is
        # dropped by mosquitto, which the ingest then reports as sequence gaps).
        "max_queued_messages 1000000\n"
        "persistence true\n"
        f"persistence_location {data}/\n"
        "log_dest stdout\n"
        f"{extra_conf}"
    )
    return result


# -- NATS (a JetStream cluster with an MQTT listener on every node) ----------------------------


@dataclass
class NatsSiteBroker:
    """What :func:`write_nats_auth` wrote: include ``auth`` at the top of every node's
    configuration and ``mqtt_tls`` inside its ``mqtt { }`` block."""

    folder: Path
    auth: Path
    mqtt_tls: Path
    ca: Path
    brain_password: Path  # the city brain's NATS password (mode 0600), for --nats-password-file
    gateways: dict[str, ClientFiles] = field(default_factory=dict)


def _nats_list(subjects: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def nats_gateway_user(site: str, gateway: str) -> str:
    """One gateway's NATS user: its certificate's subject (``verify_and_map``), MQTT only, that
    may publish only below its own prefix and read only its own command requests and the
    ingest's heartbeats."""
    prefix = topics.nats_subject(topics.gateway_prefix(site, gateway))
    reads = [topics.nats_subject(topics.command_request_topic(site, gateway)), HEARTBEATS]
    return (
        f"    {{user: {json.dumps('CN=' + pki.gateway_identity(site, gateway))}, "
        'allowed_connection_types: ["MQTT"], permissions: {'
        f"publish: {{allow: {_nats_list([prefix + '.>'])}}}, "
        f"subscribe: {{allow: {_nats_list(reads)}}}}}}}"
    )


HEARTBEATS = topics.nats_subject(topics.HOST_ROOT) + ".>"
# the JetStream API the ingest needs: its durable consumer on the MQTT layer's stream, the
# messages it fetches and their acknowledgements; nothing about other streams
NATS_BRAIN_API = (
    "$JS.API.INFO",
    f"$JS.API.STREAM.INFO.{topics.NATS_MQTT_STREAM}",
    f"$JS.API.CONSUMER.*.{topics.NATS_MQTT_STREAM}.>",
    f"$JS.API.CONSUMER.DURABLE.CREATE.{topics.NATS_MQTT_STREAM}.>",
    f"$JS.API.CONSUMER.MSG.NEXT.{topics.NATS_MQTT_STREAM}.>",
    f"$JS.ACK.{topics.NATS_MQTT_STREAM}.>",
)


def write_nats_auth(
    folder: Path,
    *,
    site: str,
    gateways: Sequence[str],
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
) -> NatsSiteBroker:
    """Write the site CA, the MQTT listener's server certificate, a client certificate per
    gateway, the users and their permissions (``auth.conf``) and the MQTT listener's TLS block
    (``mqtt-tls.conf``) into ``folder``.

    NATS maps a gateway's certificate to its user (``verify_and_map``), so a gateway needs no
    password and cannot pose as another. The city brain (ingest workers, commands) connects over
    the NATS protocol as ``city-brain`` with a random password (``city-brain.password``, 0600):
    it reads the MQTT layer's stream through a durable consumer, publishes command requests and
    heartbeats. A publish outside a gateway's permissions is acknowledged by NATS and dropped
    (its log says so): the ingest's gap check reports the hole."""
    import secrets

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = pki.make_ca(f"cityedge {site} CA")
    ca = folder / "ca.crt"
    ca.write_bytes(pki.cert_pem(ca_cert))
    _write_key(folder / "ca.key", pki.key_pem(ca_key))
    skey, scert = pki.issue(ca_key, ca_cert, "broker", client=False, server_names=server_names)
    (folder / "server.crt").write_bytes(pki.cert_pem(scert))
    _write_key(folder / "server.key", pki.key_pem(skey))
    password = secrets.token_urlsafe(24)
    brain_password = folder / f"{CITY_BRAIN}.password"
    _write_key(brain_password, password.encode() + b"\n")
    result = NatsSiteBroker(
        folder, folder / "auth.conf", folder / "mqtt-tls.conf", ca, brain_password
    )
    users = []
    for gw in gateways:
        name = pki.gateway_identity(site, gw)
        key, cert = pki.issue(ca_key, ca_cert, name)
        files = ClientFiles(name, folder / f"gateway-{gw}.crt", folder / f"gateway-{gw}.key")
        files.cert.write_bytes(pki.cert_pem(cert))
        _write_key(files.key, pki.key_pem(key))
        result.gateways[gw] = files
        users.append(nats_gateway_user(site, gw))
    root = topics.nats_subject(topics.ROOT)
    requests = topics.nats_subject(topics.COMMAND_REQUEST_FILTER).replace("+", "*")
    brain = (
        f"    {{user: {json.dumps(CITY_BRAIN)}, password: {json.dumps(password)}, "
        'allowed_connection_types: ["STANDARD"], permissions: {'
        f"publish: {{allow: {_nats_list([*NATS_BRAIN_API, requests, HEARTBEATS])}}}, "
        f"subscribe: {{allow: {_nats_list(['_INBOX.>', root + '.>'])}}}"
        "}}"
    )
    # the file holds the city brain's password: readable by the broker's user only
    _write_key(
        result.auth,
        (
            f"# generated by cityedge broker-config --engine nats for site {site}\n"
            "authorization {\n  users: [\n" + ",\n".join([brain, *users]) + "\n  ]\n}\n"
        ).encode(),
    )
    result.mqtt_tls.write_text(
        "# inside the mqtt { } block of every node: only certificates of the site CA, each\n"
        "# mapped to the user named by its subject\n"
        "tls {\n"
        f"  cert_file: {json.dumps(str(folder / 'server.crt'))}\n"
        f"  key_file: {json.dumps(str(folder / 'server.key'))}\n"
        f"  ca_file: {json.dumps(str(ca))}\n"
        "  verify_and_map: true\n"
        "}\n"
    )
    return result
