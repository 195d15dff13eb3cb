"""Forged signed envelopes for small-order Ed25519 keys: what an attacker does when a gateway
trusts such a key (the old ``AAAA…`` fallback of ``examples/river-station.yaml``).

With ``A`` of small order, the cofactorless check ``[S]B = R + [k]A`` that OpenSSL makes holds for
``R = identity, S = 0`` whenever ``[k]A`` is the identity: one message in one to eight (every
message for the identity itself). :func:`forge` tries nonces until OpenSSL accepts, so each
forgery here is checked to be real before a test expects it to be refused.
"""

from __future__ import annotations

import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols import signed

# The 8 points of small order (canonical encodings), then non-canonical encodings of some of
# them: the identity and y = -1 with the sign bit set, and y + p for y = 0 and y = 1.
SMALL_ORDER = {
    "identity": "0100000000000000000000000000000000000000000000000000000000000000",
    "order 2": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order 4 (all zero)": "0000000000000000000000000000000000000000000000000000000000000000",
    "order 4, sign bit": "0000000000000000000000000000000000000000000000000000000000000080",
    "order 8 a": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 b": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "order 8 c": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 d": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "identity, sign bit": "0100000000000000000000000000000000000000000000000000000000000080",
    "order 2, sign bit": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "y = p": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p, sign bit": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "y = p + 1": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p + 1, sign bit": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}
IDENTITY = bytes.fromhex(SMALL_ORDER["identity"])
FORGED_SIG = IDENTITY + bytes(32)  # R = identity, S = 0


def forge(body: bytes, *, key: bytes, kid: str, expires_at: int, purpose: str = "command") -> bytes:
    """An envelope around ``body`` that OpenSSL's verifier accepts for the public key ``key``
    without any private key (deterministic: the first nonce that works; nonces differ by body,
    so forgeries of different commands are not replays of each other)."""
    public = Ed25519PublicKey.from_public_bytes(key)
    salt = hashlib.sha256(body).digest()[:8]
    for i in range(1024):
        nonce = signed.b64url(salt + i.to_bytes(8, "big"))
        try:
            public.verify(FORGED_SIG, signed.signing_input(purpose, kid, expires_at, nonce, body))
        except InvalidSignature:
            continue
        doc = {
            "v": signed.VERSION,
            "alg": "Ed25519",
            "purpose": purpose,
            "kid": kid,
            "exp": expires_at,
            "nonce": nonce,
            "body": signed.b64url(body),
            "sig": signed.b64url(FORGED_SIG),
        }
        return json.dumps(doc, separators=(",", ":")).encode()
    raise AssertionError(f"no forgery for key {key.hex()} in 1024 nonces")
