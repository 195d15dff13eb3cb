"""Checks on Ed25519 public keys and signatures that the verifier itself does not make.

cryptography's Ed25519 (OpenSSL) verifies with the cofactorless equation ``[S]B = R + [k]A``
(RFC 8032, 5.1.7) and takes any 32 bytes that decode to a curve point as a public key: the
identity, the seven other points of small order, and non-canonical encodings of them
(``y >= p``). With such a key ``A`` the signature ``R = identity, S = 0`` holds whenever ``[k]A``
is the identity, that is for one message in one to eight (for every message with the identity
itself): anyone can forge by trying a few nonces. All-zero bytes, the usual placeholder, are
such a point (order 4). So keys are checked where they are loaded (:func:`check_public_key`),
and a signature whose ``R`` is not a canonical point of large order or whose ``S`` is not
below the group order is refused before it reaches the verifier (:func:`signature_problem`).

A key made by an honest key generation is ``[a]B``: a point of the prime-order subgroup, never
small-order, always canonically encoded. The checks refuse everything else, and the public
keys whose private key is published (RFC 8032's test vectors, seeds of one repeated byte).

Pure Python big-integer arithmetic on the twisted Edwards curve (extended coordinates, RFC 8032
5.1.4); not constant time, and it need not be: everything it handles is public. The node's
firmware has its own copy of the point routines (``firmware/cenode/ed25519.py``): MicroPython
cannot import this package.
"""

from __future__ import annotations

import functools
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.errors import ProtocolError

P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493  # order of the base point
_D: Final = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1: Final = pow(2, (P - 1) // 4, P)

_Point = tuple[int, int, int, int]  # extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z
_IDENTITY: Final[_Point] = (0, 1, 1, 0)

RULE: Final = (
    "an Ed25519 public key must be the 32-byte canonical encoding of a point of the prime-order "
    "subgroup: not all zero, not one of the 8 small-order points (in any encoding), not a "
    "published test key; use the key 'cityedge command-key' (or your key tool) printed"
)

# RFC 8032, 7.1, tests 1, 2 and 3: their private keys are published
_PUBLISHED: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    )
)


class WeakKey(ProtocolError):
    """A public key that must not be trusted; the message says why (see :data:`RULE`)."""


def _add(p: _Point, q: _Point) -> _Point:
    """p + q (add-2008-hwcd-3 for a = -1; also right for p == q)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * 2 * _D * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _times(n: int, p: _Point) -> _Point:
    acc = _IDENTITY
    for bit in bin(n)[2:]:
        acc = _add(acc, acc)
        if bit == "1":
            acc = _add(acc, p)
    return acc


def _is_identity(p: _Point) -> bool:
    x, y, z, _t = p
    return x % P == 0 and (y - z) % P == 0


def _decode(raw: bytes) -> tuple[_Point, bool] | None:
    """The point ``raw`` encodes and whether the encoding is canonical; None when it is not a
    point. Lenient on purpose (``y >= p`` reduced, ``x = 0`` with the sign bit), as permissive
    verifiers are, so that such encodings are recognised and refused."""
    n = int.from_bytes(raw, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    canonical = y < P
    y %= P
    u, v = (y * y - 1) % P, (_D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P  # RFC 8032, 5.1.3
    if (v * x * x - u) % P != 0:
        x = x * _SQRT_M1 % P
        if (v * x * x - u) % P != 0:
            return None
    if x == 0 and sign:
        canonical = False
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P), canonical


@functools.cache
def _repeated_byte_keys() -> frozenset[bytes]:
    """Public keys of the 256 seeds made of one repeated byte (all zero, all 0xff, ...)."""
    return frozenset(
        Ed25519PrivateKey.from_private_bytes(bytes([b]) * 32)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for b in range(256)
    )


@functools.lru_cache(maxsize=256)
def key_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a trustworthy Ed25519 public key, or None when it is."""
    if len(raw) != 32:
        return f"{len(raw)} bytes, not 32"
    if not any(raw):
        return "all zero bytes (a placeholder; a small-order point anyone can forge for)"
    decoded = _decode(raw)
    if decoded is None:
        return "not a point of the curve"
    point, canonical = decoded
    if _is_identity(_times(8, point)):
        return "a small-order point (anyone can forge signatures for it without a private key)"
    if not canonical:
        return "a non-canonical encoding"
    if not _is_identity(_times(L, point)):
        return "outside the prime-order subgroup (no key pair has such a public key)"
    if raw in _PUBLISHED or raw in _repeated_byte_keys():
        return "a published test key (its private key is known)"
    return None


def check_public_key(raw: bytes) -> None:
    """Raise :class:`WeakKey` (a ``ValueError``) naming what is wrong with ``raw``."""
    problem = key_problem(bytes(raw))
    if problem is not None:
        raise WeakKey(f"{problem}; {RULE}")


def signature_problem(sig: bytes) -> str | None:
    """Why a 64-byte signature is refused before verifying, or None: ``S`` must be below the
    group order (RFC 8032, 5.1.7) and ``R`` a canonically encoded point that is not of small
    order (no honest signer makes another)."""
    if len(sig) != 64:
        return "not 64 bytes"
    if int.from_bytes(sig[32:], "little") >= L:
        return "S is not below the group order"
    decoded = _decode(sig[:32])
    if decoded is None or not decoded[1]:
        return "R is not a canonically encoded point"
    if _is_identity(_times(8, decoded[0])):
        return "R is a small-order point"
    return None
