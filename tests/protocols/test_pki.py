"""The site CA and the certificates it issues."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from protocols import pki


def test_issued_certificate_chains_to_the_ca() -> None:
    ca_key, ca = pki.make_ca("riverside CA")
    _key, cert = pki.issue(ca_key, ca, pki.gateway_identity("riverside", "gw-1"))
    assert pki.common_name(cert) == "riverside.gw-1"
    cert.verify_directly_issued_by(ca)
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku  # type: ignore[operator]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_server_certificate_names() -> None:
    ca_key, ca = pki.make_ca("ca")
    _k, cert = pki.issue(
        ca_key, ca, "broker", client=False, server_names=["127.0.0.1", "broker.local"]
    )
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert "broker.local" in str(san) and "127.0.0.1" in str(san)


def test_pem_round_trip() -> None:
    key, cert = pki.make_ca("ca")
    assert pki.load_cert(pki.cert_pem(cert)) == cert
    assert pki.load_key(pki.key_pem(key)).private_numbers() == key.private_numbers()


def test_gateway_acl_limits_it_to_its_own_prefix() -> None:
    assert pki.gateway_acl("riverside", "gw-1") == (
        "user riverside.gw-1\n"
        "topic read cityedge/v1/riverside/gw-1/cmd/req\n"
        "topic write cityedge/v1/riverside/gw-1/#\n"
    )
