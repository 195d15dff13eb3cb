"""Visitor passes: an Ed25519-signed ticket small enough for a QR code on a phone screen.

A pass lets one visit (or one person) through one gate of one site, within a validity window,
once or a few times. The gate verifies it offline with the issuers' public keys it trusts; the
uses are counted on the gate's disk (``edge.face_access.passes``), so a copy of a used pass
opens nothing.

Binary form (big-endian), then signed::

    offset  size  field
    0       1     version (1)
    1       1     flags: bit 0 set = the subject is an enrolled person, clear = a visit
    2       4     not_before, Unix seconds
    6       4     not_after, Unix seconds (valid while now < not_after)
    10      2     uses (1-65535)
    12      8     pass id (random; the key of the gate's use counter)
    20      1+n   kid: the issuer's key id   (one length byte, then ASCII)
    ..      1+n   site                       (idem)
    ..      1+n   gate                       (idem)
    ..      1+n   subject: person or visit id (idem)
    end     64    Ed25519 signature over b"cityedge-pass-v1\\n" + every byte before it

Each text is 1-64 characters of ``A-Z a-z 0-9 _ . -`` starting alphanumeric (the envelope's
``Ident``). The signing domain differs from the signed envelopes' (:mod:`protocols.signed`), so
a signature made for a command never passes as a pass, nor the reverse.

On the QR code: ``CEP1:`` then the bytes in Base45 (RFC 9285), whose 45 characters are exactly
the QR alphanumeric set — a typical pass (about 120 bytes) is 185 characters, a version 8 QR
code at error correction M (49x49 modules), readable from a phone screen at arm's length.

Refusals carry a stable reason (:class:`PassRefusal`) for the screen, the ``access`` event and
the audit log: ``malformed``, ``unknown-key``, ``forged``, ``wrong-gate``, ``not-yet-valid``,
``expired``, ``too-long``, and ``used`` (given by the gate's counter, not here).

Limits come before parsing: a text longer than :data:`MAX_TEXT_CHARS` is ``malformed`` unread.
Keys are checked, not only parsed (:mod:`protocols.ed25519`): a weak or published key is
``unknown-key`` whoever configured it; a signature no honest signer makes is ``forged``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols import ed25519
from protocols.errors import ProtocolError
from protocols.signed import public_key_raw

VERSION: Final = 1
PREFIX: Final = "CEP1:"
DOMAIN: Final = b"cityedge-pass-v1\n"
MAX_TEXT_CHARS: Final = 512
SIGNATURE_BYTES: Final = 64
FLAG_PERSON: Final = 0x01
_HEAD = struct.Struct(">BBIIH8s")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_B45: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_VALUE: Final = {c: i for i, c in enumerate(_B45)}


class PassRefusal(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown-key"
    FORGED = "forged"
    WRONG_GATE = "wrong-gate"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    TOO_LONG = "too-long"
    USED = "used"


class PassRefused(ProtocolError):
    """A pass that must not open the gate; ``reason`` in one word, the message in a sentence."""

    def __init__(self, reason: PassRefusal, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message


# -- Base45 (RFC 9285) ---------------------------------------------------------------------------
def b45encode(data: bytes) -> str:
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        c, rest = divmod(n, 45)
        e, d = divmod(c, 45)
        out += (_B45[rest], _B45[d], _B45[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (_B45[c], _B45[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """RFC 9285, section 4.2; ``ValueError`` for a character outside the alphabet, a length of
    1 modulo 3, or a group whose value does not fit its bytes."""
    if len(text) % 3 == 1:
        raise ValueError("a Base45 text cannot be 1 more than a multiple of 3 characters long")
    try:
        values = [_B45_VALUE[c] for c in text]
    except KeyError as err:
        raise ValueError(f"{err.args[0]!r} is not a Base45 character") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        group = values[i : i + 3]
        n = sum(v * 45**k for k, v in enumerate(group))
        if len(group) == 3:
            if n > 0xFFFF:
                raise ValueError("a Base45 group is larger than two bytes can hold")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise ValueError("the last Base45 group is larger than one byte can hold")
            out.append(n)
    return bytes(out)


# -- the pass --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisitorPass:
    kid: str
    site: str
    gate: str
    subject: str
    not_before: int
    not_after: int
    uses: int = 1
    pass_id: bytes = b"\0" * 8
    person: bool = False  # the subject is an enrolled person (else a visit id)

    def __post_init__(self) -> None:
        for name in ("kid", "site", "gate", "subject"):
            if not _IDENT.match(getattr(self, name)):
                raise ValueError(f"{name}: 1-64 letters, digits, '_', '.', '-', alphanumeric first")
        if not 0 <= self.not_before < self.not_after < 2**32:
            raise ValueError("the validity window must end after it starts (Unix seconds)")
        if not 1 <= self.uses <= 0xFFFF:
            raise ValueError("uses: 1-65535")
        if len(self.pass_id) != 8:
            raise ValueError("pass_id: 8 bytes")

    @property
    def id_hex(self) -> str:
        return self.pass_id.hex()

    def body(self) -> bytes:
        """The signed bytes, without the signature."""
        head = _HEAD.pack(
            VERSION,
            FLAG_PERSON if self.person else 0,
            self.not_before,
            self.not_after,
            self.uses,
            self.pass_id,
        )
        texts = b"".join(
            bytes([len(t)]) + t.encode("ascii")
            for t in (self.kid, self.site, self.gate, self.subject)
        )
        return head + texts


def issue(p: VisitorPass, key: Ed25519PrivateKey) -> str:
    """The QR text of ``p`` signed with ``key``."""
    body = p.body()
    return PREFIX + b45encode(body + key.sign(DOMAIN + body))


def _malformed(message: str) -> PassRefused:
    return PassRefused(PassRefusal.MALFORMED, message)


def parse(text: str) -> tuple[VisitorPass, bytes, bytes]:
    """The pass, its signed bytes and its signature, unverified. Raises only :class:`PassRefused`
    (``malformed``) whatever ``text`` holds."""
    if len(text) > MAX_TEXT_CHARS:
        raise _malformed(f"longer than {MAX_TEXT_CHARS} characters")
    if not text.startswith(PREFIX):
        raise _malformed(f"not a cityedge pass (it does not start with {PREFIX!r})")
    try:
        raw = b45decode(text[len(PREFIX) :])
    except ValueError as err:
        raise _malformed(f"not Base45: {err}") from None
    if len(raw) < _HEAD.size + 4 + SIGNATURE_BYTES:
        raise _malformed(f"{len(raw)} bytes is too short for a pass")
    body, sig = raw[:-SIGNATURE_BYTES], raw[-SIGNATURE_BYTES:]
    version, flags, nbf, naf, uses, pass_id = _HEAD.unpack_from(body)
    if version != VERSION:
        raise _malformed(f"version {version}; this gate reads version {VERSION}")
    if flags & ~FLAG_PERSON:
        raise _malformed(f"unknown flags 0x{flags:02x}")
    texts: list[str] = []
    at = _HEAD.size
    for _ in range(4):
        if at >= len(body):
            raise _malformed("cut short")
        n = body[at]
        chunk = body[at + 1 : at + 1 + n]
        if len(chunk) != n:
            raise _malformed("cut short")
        try:
            texts.append(chunk.decode("ascii"))
        except UnicodeDecodeError:
            raise _malformed("a text field is not ASCII") from None
        at += 1 + n
    if at != len(body):
        raise _malformed(f"{len(body) - at} bytes after the last field")
    try:
        p = VisitorPass(
            kid=texts[0],
            site=texts[1],
            gate=texts[2],
            subject=texts[3],
            not_before=nbf,
            not_after=naf,
            uses=uses,
            pass_id=pass_id,
            person=bool(flags & FLAG_PERSON),
        )
    except ValueError as err:
        raise _malformed(str(err)) from None
    return p, body, sig


def verify(
    text: str,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    site: str,
    gate: str,
    now: float,
    max_validity_s: int,
    skew_s: int = 60,
) -> VisitorPass:
    """Check everything but the use count, in an order that never tells unsigned input which
    key ids exist or which gates there are: form, key, signature, then gate and time.

    ``skew_s`` forgives a phone's or a gate's clock running that far off at the start of the
    window only (never past its end). ``max_validity_s`` refuses a window longer than that: a
    leaked long-lived pass is a standing key to the gate."""
    p, body, sig = parse(text)
    key = keys.get(p.kid)
    if key is None:
        raise PassRefused(PassRefusal.UNKNOWN_KEY, f"issuer key {p.kid!r} is not trusted here")
    weak = ed25519.key_problem(public_key_raw(key))
    if weak is not None:
        raise PassRefused(PassRefusal.UNKNOWN_KEY, f"issuer key {p.kid!r} is not trusted: {weak}")
    odd = ed25519.signature_problem(sig)
    if odd is not None:
        raise PassRefused(PassRefusal.FORGED, f"no honest signer makes this signature: {odd}")
    try:
        key.verify(sig, DOMAIN + body)
    except InvalidSignature:
        raise PassRefused(PassRefusal.FORGED, "the signature does not match") from None
    if (p.site, p.gate) != (site, gate):
        raise PassRefused(
            PassRefusal.WRONG_GATE, f"the pass is for {p.site}/{p.gate}, this is {site}/{gate}"
        )
    if now + skew_s < p.not_before:
        raise PassRefused(
            PassRefusal.NOT_YET_VALID, f"valid from {p.not_before}, {int(p.not_before - now)} s on"
        )
    if now >= p.not_after:
        raise PassRefused(PassRefusal.EXPIRED, f"expired {int(now - p.not_after)} s ago")
    if p.not_after - p.not_before > max_validity_s:
        raise PassRefused(
            PassRefusal.TOO_LONG,
            f"valid for {p.not_after - p.not_before} s; this gate accepts at most {max_validity_s}",
        )
    return p
