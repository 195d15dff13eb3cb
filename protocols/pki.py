"""A site's certificate authority and the certificates it issues (pure: bytes in, bytes out).

Keys are ECDSA P-256 (supported by mosquitto/OpenSSL and by MicroPython's mbedTLS). A client
certificate's common name is its MQTT identity: with mosquitto's ``use_identity_as_username
true`` the broker applies the ACL of that name. :func:`acl_block` writes those ACL lines; a
gateway may write only below its own topic prefix and read only its own commands
(:func:`gateway_acl`).

Private keys are returned as objects and as PEM only on request; callers write them with 0600
permissions and never log them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols import topics

Key = ec.EllipticCurvePrivateKey


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def make_ca(
    common_name: str,
    *,
    organization: str | None = "cityedge",
    valid_days: int = 3650,
    now: dt.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """A self-signed CA key and certificate for one site."""
    key = new_key()
    start = now or dt.datetime.now(dt.UTC)
    name = _name(common_name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    client: bool = True,
    server_names: Sequence[str] = (),
    valid_days: int = 825,
    key: Key | None = None,
    now: dt.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """A certificate for ``common_name`` signed by the CA: a client (devices, gateways) or a
    server (the broker: give its host names or addresses in ``server_names``)."""
    key = key or new_key()
    start = now or dt.datetime.now(dt.UTC)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, None))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    """PKCS#8 PEM, unencrypted: write it 0600 and keep it out of logs."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def load_key(pem: bytes) -> Key:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("expected an EC private key")
    return key


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def acl_block(
    user: str, *, read: Iterable[str] = (), write: Iterable[str] = (), readwrite: Iterable[str] = ()
) -> str:
    """mosquitto ACL lines for one user (the certificate's common name)."""
    if any(c in user for c in "\n\r"):
        raise ValueError("user names cannot contain line breaks")
    lines = [f"user {user}"]
    lines += [f"topic read {t}" for t in read]
    lines += [f"topic write {t}" for t in write]
    lines += [f"topic readwrite {t}" for t in readwrite]
    return "\n".join(lines) + "\n"


def gateway_identity(site: str, gateway: str) -> str:
    """The common name (and MQTT user) of a gateway's client certificate."""
    return f"{site}.{gateway}"


def gateway_acl(site: str, gateway: str) -> str:
    """A gateway publishes only below its own prefix and reads only its own command requests."""
    prefix = topics.gateway_prefix(site, gateway)
    return acl_block(
        gateway_identity(site, gateway),
        write=[f"{prefix}/#"],
        read=[topics.command_request_topic(site, gateway)],
    )
