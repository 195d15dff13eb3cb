"""Signed envelopes for what the edge must only accept from its owners: commands, remote config
and OTA manifests. Ed25519 signature, key id, expiry, nonce and purpose; anything else is refused.

Wire form (UTF-8 JSON)::

    {"v": 1, "alg": "Ed25519", "purpose": "command", "kid": "ops-2026", "exp": 1795500000,
     "nonce": "<base64url, 16 bytes>", "body": "<base64url of the signed content>",
     "sig": "<base64url, 64 bytes>"}

The signature covers these bytes (nothing needs canonical JSON, so a MicroPython node can verify
with a plain Ed25519 routine over the exact bytes it received)::

    b"cityedge-signed-v1\\n" + purpose + b"\\n" + kid + b"\\n" + str(exp) + b"\\n" + nonce + b"\\n" + body

where ``purpose``, ``kid``, ``exp`` and ``nonce`` are the ASCII texts as they stand in the JSON and
``body`` is the decoded content. The purpose is signed, so a signature made for a command can never
pass as an OTA manifest.

Refusals carry a stable reason (:class:`Refusal`) for the reply and the audit record:
``unsigned``, ``malformed``, ``wrong-purpose``, ``unknown-key``, ``bad-signature``, ``expired``,
``too-long``, ``replayed``.

Limits checked before anything is parsed: an envelope of more than :data:`MAX_ENVELOPE_BYTES`,
nested, holding NaN or a lone surrogate is ``malformed`` (:mod:`protocols.boundedjson`). Keys are
checked, not only parsed: :func:`public_key_from_raw` refuses all-zero, small-order,
non-canonical and published keys (:mod:`protocols.ed25519`), and :func:`verify` refuses to trust
such a key whoever loaded it (``unknown-key``) and a signature whose ``R`` is of small order or
whose ``S`` is not reduced (``bad-signature``) before the verifier sees them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols import boundedjson, ed25519
from protocols.errors import DecodeError, ProtocolError

VERSION: Final = 1
DOMAIN: Final = b"cityedge-signed-v1\n"
PURPOSES: Final = frozenset({"command", "config", "ota", "delegation"})
_KID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_B64 = re.compile(r"^[A-Za-z0-9_-]*$")
MAX_ENVELOPE_BYTES: Final = 1 << 20  # a config.apply carries a whole site file


class Refusal(StrEnum):
    UNSIGNED = "unsigned"
    MALFORMED = "malformed"
    WRONG_PURPOSE = "wrong-purpose"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    TOO_LONG = "too-long"
    REPLAYED = "replayed"


class SignatureRefused(ProtocolError):
    """The envelope is not acceptable; ``reason`` says why in one word, the message in a sentence."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not _B64.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_input(purpose: str, kid: str, exp: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes the signature covers (see the module docstring)."""
    head = "\n".join((purpose, kid, str(exp), nonce)).encode("ascii")
    return DOMAIN + head + b"\n" + body


def sign(
    body: bytes,
    *,
    purpose: str,
    kid: str,
    key: Ed25519PrivateKey,
    expires_at: int,
    nonce: bytes | None = None,
) -> bytes:
    """A signed envelope around ``body``."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
    if not _KID.match(kid):
        raise ValueError("kid: 1-64 letters, digits, '_', '.', '-'")
    n = b64url(nonce if nonce is not None else secrets.token_bytes(16))
    sig = key.sign(signing_input(purpose, kid, expires_at, n, body))
    doc = {
        "v": VERSION,
        "alg": "Ed25519",
        "purpose": purpose,
        "kid": kid,
        "exp": expires_at,
        "nonce": n,
        "body": b64url(body),
        "sig": b64url(sig),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Verified:
    body: bytes
    purpose: str
    kid: str
    exp: int
    nonce: str


@dataclass
class NonceStore:
    """Nonces seen and not yet expired, to refuse replays.

    Bounded: when full, the nonces that expire first are forgotten and ``floor`` rises to their
    expiry; an envelope expiring at or before ``floor`` is then refused as possibly replayed,
    so forgetting never lets a replay through.
    """

    capacity: int = 100_000
    seen: dict[str, int] = field(default_factory=dict)
    floor: int = 0

    def check_and_add(self, nonce: str, exp: int, now: float) -> None:
        if exp <= self.floor or nonce in self.seen:
            raise SignatureRefused(Refusal.REPLAYED, "this envelope (nonce) was already used")
        if len(self.seen) >= self.capacity:
            for n in [n for n, e in self.seen.items() if e < now]:
                del self.seen[n]
        while len(self.seen) >= self.capacity:
            oldest = min(self.seen, key=self.seen.__getitem__)
            self.floor = max(self.floor, self.seen.pop(oldest))
            if exp <= self.floor:
                raise SignatureRefused(
                    Refusal.REPLAYED, "too many recent envelopes to tell; send a fresh one"
                )
        self.seen[nonce] = exp


def _field(doc: Mapping[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SignatureRefused(
            Refusal.MALFORMED, f"field {name!r} missing or not a {kind.__name__}"
        )
    return value


def verify(
    data: bytes | str,
    *,
    purpose: str,
    keys: Mapping[str, Ed25519PublicKey],
    now: float,
    nonces: NonceStore | None = None,
    max_ttl_s: int | None = 86_400,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> Verified:
    """Check everything, in an order that never leaks which key ids exist to unsigned input.

    ``max_ttl_s`` refuses envelopes valid for longer than that from ``now`` (a leaked long-lived
    command is a standing risk); ``None`` allows any expiry (OTA manifests may live longer).
    The nonce is recorded only when everything else passed. Raises only
    :class:`SignatureRefused`, whatever ``data`` holds.
    """
    try:
        doc = boundedjson.loads(data, max_bytes=max_bytes)
    except DecodeError as err:
        raise SignatureRefused(Refusal.MALFORMED, f"not a JSON envelope: {err}") from err
    if not isinstance(doc, dict):
        raise SignatureRefused(Refusal.MALFORMED, "not a JSON object")
    if "sig" not in doc:
        raise SignatureRefused(Refusal.UNSIGNED, "no signature; only signed envelopes are accepted")
    if doc.get("v") != VERSION or doc.get("alg") != "Ed25519":
        raise SignatureRefused(Refusal.MALFORMED, f"expected v={VERSION} and alg=Ed25519")
    got_purpose = _field(doc, "purpose", str)
    kid = _field(doc, "kid", str)
    exp = _field(doc, "exp", int)
    nonce = _field(doc, "nonce", str)
    try:
        body = unb64url(_field(doc, "body", str))
        sig = unb64url(_field(doc, "sig", str))
        nonce_bytes = unb64url(nonce)
    except (ValueError, binascii.Error) as err:
        raise SignatureRefused(Refusal.MALFORMED, "body, sig and nonce must be base64url") from err
    if len(sig) != 64 or not 8 <= len(nonce_bytes) <= 64 or not _KID.match(kid):
        raise SignatureRefused(Refusal.MALFORMED, "bad signature length, nonce length or key id")
    if got_purpose != purpose:
        raise SignatureRefused(
            Refusal.WRONG_PURPOSE, f"signed for {got_purpose!r}, used as {purpose!r}"
        )
    key = keys.get(kid)
    if key is None:
        raise SignatureRefused(Refusal.UNKNOWN_KEY, f"key id {kid!r} is not trusted here")
    weak = ed25519.key_problem(public_key_raw(key))
    if weak is not None:
        raise SignatureRefused(Refusal.UNKNOWN_KEY, f"key {kid!r} is not trusted: {weak}")
    odd = ed25519.signature_problem(sig)
    if odd is not None:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, f"no honest signer makes it: {odd}")
    try:
        key.verify(sig, signing_input(got_purpose, kid, exp, nonce, body))
    except InvalidSignature as err:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, "the signature does not match") from err
    if exp <= now:
        raise SignatureRefused(Refusal.EXPIRED, f"expired {int(now - exp)} s ago")
    if max_ttl_s is not None and exp - now > max_ttl_s:
        raise SignatureRefused(
            Refusal.TOO_LONG, f"valid for more than {max_ttl_s} s; sign a shorter one"
        )
    if nonces is not None:
        nonces.check_and_add(nonce, exp, now)
    return Verified(body, got_purpose, kid, exp, nonce)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """The key, once checked; :class:`protocols.ed25519.WeakKey` (a ``ValueError``) says why a
    key must not be trusted (all zero, small order, non-canonical, published)."""
    ed25519.check_public_key(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
