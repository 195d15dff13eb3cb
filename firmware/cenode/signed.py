"""Verify cityedge signed envelopes on the node (the same rules as ``protocols/signed.py``).

The signature covers ``b"cityedge-signed-v1\\n" + purpose + "\\n" + kid + "\\n" + exp + "\\n" +
nonce + "\\n" + body`` (no canonical JSON needed). Refusals carry the same one-word reasons as the
gateway side: unsigned, malformed, wrong-purpose, unknown-key, bad-signature, expired, replayed.

``now`` is the node's clock in Unix seconds, or ``None`` when the clock is not set: expiry then
cannot be checked, so callers that need it (commands) refuse to act without a set clock, and OTA
relies on its version rule against replays.
"""

import json

from cenode import ed25519
from cenode.util import b64url_decode

DOMAIN = b"cityedge-signed-v1\n"


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason + ": " + message)
        self.reason = reason


def _field(doc: dict, name: str, kind: type) -> object:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Refused("malformed", "field " + name + " missing or of the wrong type")
    return value


def _kid_ok(kid: str) -> bool:
    if not 1 <= len(kid) <= 64 or not kid[0].isalpha() and not kid[0].isdigit():
        return False
    for c in kid:
        if not (c.isalpha() or c.isdigit() or c in "_.-") or ord(c) > 127:
            return False
    return True


def parse(data: bytes) -> dict:
    """The envelope's JSON object; :class:`Refused` (malformed) when it is not one."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeError) as err:
        raise Refused("malformed", "not JSON")
    if not isinstance(doc, dict):
        raise Refused("malformed", "not a JSON object")
    return doc


def verify(data: bytes, purpose: str, keys: dict, now: int | None) -> tuple:
    """``(body, kid, exp, nonce)`` of a good envelope; :class:`Refused` otherwise.

    ``keys`` maps key ids to 32-byte raw Ed25519 public keys."""
    return verify_doc(parse(data), purpose, keys, now)


def verify_doc(doc, purpose: str, keys: dict, now: int | None) -> tuple:
    """:func:`verify` of an envelope already parsed (a delegation inside a command)."""
    if not isinstance(doc, dict):
        raise Refused("malformed", "not a JSON object")
    if "sig" not in doc:
        raise Refused("unsigned", "no signature; only signed envelopes are accepted")
    if doc.get("v") != 1 or doc.get("alg") != "Ed25519":
        raise Refused("malformed", "expected v=1 and alg=Ed25519")
    got = _field(doc, "purpose", str)
    kid = _field(doc, "kid", str)
    exp = _field(doc, "exp", int)
    nonce = _field(doc, "nonce", str)
    try:
        body = b64url_decode(_field(doc, "body", str))  # type: ignore[arg-type]
        sig = b64url_decode(_field(doc, "sig", str))  # type: ignore[arg-type]
        nonce_len = len(b64url_decode(nonce))  # type: ignore[arg-type]
    except ValueError as err:
        raise Refused("malformed", "body, sig and nonce must be base64url")
    if len(sig) != 64 or not 8 <= nonce_len <= 64 or not _kid_ok(kid):  # type: ignore[arg-type]
        raise Refused("malformed", "bad signature length, nonce length or key id")
    if got != purpose:
        raise Refused("wrong-purpose", "signed for " + str(got) + ", used as " + purpose)
    key = keys.get(kid)
    if key is None:
        raise Refused("unknown-key", "key id " + str(kid) + " is not trusted here")
    signed = DOMAIN + ("\n".join((got, kid, str(exp), nonce))).encode() + b"\n" + body  # type: ignore[arg-type]
    if not ed25519.verify(key, signed, sig):
        raise Refused("bad-signature", "the signature does not match")
    if now is not None and exp <= now:  # type: ignore[operator]
        raise Refused("expired", "expired " + str(now - exp) + " s ago")  # type: ignore[operator]
    return body, kid, exp, nonce


class Nonces:
    """Recently used nonces, bounded: a command is acted on once.

    When full, the entry expiring first is forgotten and ``floor`` rises to its expiry; anything
    expiring at or before ``floor`` is then refused, so forgetting never lets a replay through."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self.seen: dict = {}
        self.floor = 0

    def check_and_add(self, nonce: str, exp: int) -> None:
        if exp <= self.floor or nonce in self.seen:
            raise Refused("replayed", "this envelope (nonce) was already used")
        self.seen[nonce] = exp
        while len(self.seen) > self.capacity:
            oldest = min(self.seen, key=lambda n: self.seen[n])
            self.floor = max(self.floor, self.seen.pop(oldest))
