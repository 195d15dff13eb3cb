"""Keys for the face store and the audit log, derived from the gateway's secret.

HKDF-SHA256 (RFC 5869) with the site and gateway ids as salt and a purpose label as ``info``:
one secret in ``secrets.yaml`` gives independent keys for the templates (AES-256-GCM), the
audit chain (HMAC-SHA256) and the card and PIN digests (HMAC-SHA256: the store holds no card
number or PIN, and without the secret a stolen store cannot be searched for one). Another
gateway, or another purpose, gets another key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class FaceKeys:
    templates: bytes
    audit: bytes
    credentials: bytes

    def __repr__(self) -> str:  # keys never appear in logs or tracebacks
        return "FaceKeys(**********)"


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def derive_keys(secret: str, site: str, gateway: str) -> FaceKeys:
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the gateway secret must have at least {MIN_SECRET_CHARS} characters")
    salt = f"cityedge/{site}/{gateway}".encode()
    raw = secret.encode()
    return FaceKeys(
        templates=_hkdf(raw, salt, b"cityedge faces: templates v1"),
        audit=_hkdf(raw, salt, b"cityedge faces: audit chain v1"),
        credentials=_hkdf(raw, salt, b"cityedge faces: card and PIN digests v1"),
    )
