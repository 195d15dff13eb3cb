"""Ed25519 signature verification (RFC 8032, section 5.1.7) in plain Python.

MicroPython has no Ed25519; its big integers are enough for this verify-only routine (nodes never
sign). Points use extended twisted-Edwards coordinates (X:Y:Z:T), so the only inversion is in
decoding. Not constant time, and it need not be: everything it handles is public.
"""

from cenode.sha512 import sha512

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_I = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # sqrt(-1)
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_B = (_BX, _BY, 1, _BX * _BY % _P)
_ZERO = (0, 1, 1, 0)

Point = tuple  # (X, Y, Z, T)


def _add(p: Point, q: Point) -> Point:
    # RFC 8032, 5.1.4 (a = -1); also correct for doubling
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: Point) -> Point:
    q = _ZERO
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _equal(p: Point, q: Point) -> bool:
    x1, y1, z1, _t1 = p
    x2, y2, z2, _t2 = q
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _decode(data: bytes) -> Point | None:
    """RFC 8032, 5.1.3; None when the bytes are not a point."""
    if len(data) != 32:
        return None
    n = int.from_bytes(data, "little")
    sign = n >> 255
    y = n & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        return (0, y, 1, 0)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _I % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _small_order(p: Point) -> bool:
    return _equal(_mul(8, p), _ZERO)


def weak_key(public: bytes) -> bool:
    """True for bytes no honest key pair has as its public key: not a canonically encoded
    point, or a point of small order (all zero bytes among them). With such a key anyone can
    forge: ``R = identity, S = 0`` verifies whenever ``[h]A`` is the identity."""
    a = _decode(public) if len(public) == 32 else None
    return a is None or _small_order(a)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s Ed25519 signature of ``message``; False also for
    a weak key (:func:`weak_key`) and for an ``R`` of small order, which no honest signer makes."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decode(public)
    r = _decode(signature[:32])
    if a is None or r is None or _small_order(a) or _small_order(r):
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = int.from_bytes(sha512(signature[:32] + public + message), "little") % _L
    return _equal(_mul(s, _B), _add(r, _mul(h, a)))
