"""Signed envelopes: what passes, and a reason for everything refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols import signed
from protocols.signed import NonceStore, Refusal, SignatureRefused

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = {"ops-1": KEY.public_key()}
NOW = 1_800_000_000


def make(body: bytes = b'{"cmd":"ping"}', **kw: object) -> bytes:
    args: dict[str, object] = {
        "purpose": "command",
        "kid": "ops-1",
        "key": KEY,
        "expires_at": NOW + 60,
    }
    args.update(kw)
    return signed.sign(body, **args)  # type: ignore[arg-type]


def refusal(data: bytes | str, **kw: object) -> Refusal:
    args: dict[str, object] = {"purpose": "command", "keys": KEYS, "now": NOW}
    args.update(kw)
    with pytest.raises(SignatureRefused) as info:
        signed.verify(data, **args)  # type: ignore[arg-type]
    return info.value.reason


def tamper(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_a_good_envelope_passes_and_gives_the_body() -> None:
    v = signed.verify(make(), purpose="command", keys=KEYS, now=NOW, nonces=NonceStore())
    assert v.body == b'{"cmd":"ping"}' and v.kid == "ops-1" and v.exp == NOW + 60


def test_signing_input_vector() -> None:
    """A fixed vector, shared with the MicroPython verifier's tests."""
    data = make(b"hello", nonce=bytes(16))
    doc = json.loads(data)
    assert doc["nonce"] == "AAAAAAAAAAAAAAAAAAAAAA"
    assert signed.signing_input("command", "ops-1", NOW + 60, doc["nonce"], b"hello") == (
        b"cityedge-signed-v1\ncommand\nops-1\n1800000060\nAAAAAAAAAAAAAAAAAAAAAA\nhello"
    )
    # Ed25519 is deterministic: the same key and input always give this signature
    assert doc["sig"] == signed.b64url(
        KEY.sign(signed.signing_input("command", "ops-1", NOW + 60, doc["nonce"], b"hello"))
    )


CASES = [
    ("unsigned", json.dumps({"cmd": "ping"}).encode(), {}, Refusal.UNSIGNED),
    ("not json", b"\x00garbage", {}, Refusal.MALFORMED),
    ("json list", b"[1, 2]", {}, Refusal.MALFORMED),
    ("wrong version", tamper(make(), v=2), {}, Refusal.MALFORMED),
    ("wrong alg", tamper(make(), alg="HS256"), {}, Refusal.MALFORMED),
    ("exp as text", tamper(make(), exp="soon"), {}, Refusal.MALFORMED),
    ("sig not base64", tamper(make(), sig="!!!"), {}, Refusal.MALFORMED),
    ("short sig", tamper(make(), sig="AAAA"), {}, Refusal.MALFORMED),
    ("unknown key", make(kid="ops-9"), {}, Refusal.UNKNOWN_KEY),
    ("signed by another key", make(key=OTHER), {}, Refusal.BAD_SIGNATURE),
    (
        "body changed",
        tamper(make(), body=signed.b64url(b'{"cmd":"reboot"}')),
        {},
        Refusal.BAD_SIGNATURE,
    ),
    ("expiry changed", tamper(make(), exp=NOW + 3600), {}, Refusal.BAD_SIGNATURE),
    ("expired", make(expires_at=NOW - 1), {}, Refusal.EXPIRED),
    ("valid too long", make(expires_at=NOW + 10 * 86_400), {}, Refusal.TOO_LONG),
    ("command used as ota", make(), {"purpose": "ota"}, Refusal.WRONG_PURPOSE),
    (
        "purpose relabelled",
        tamper(make(), purpose="ota"),
        {"purpose": "ota"},
        Refusal.BAD_SIGNATURE,
    ),
]


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refusals(data: bytes, kwargs: dict[str, object], reason: Refusal) -> None:
    assert refusal(data, **kwargs) is reason


def test_replay_is_refused() -> None:
    store = NonceStore()
    data = make()
    signed.verify(data, purpose="command", keys=KEYS, now=NOW, nonces=store)
    assert refusal(data, nonces=store) is Refusal.REPLAYED


def test_a_refused_envelope_does_not_burn_its_nonce() -> None:
    store = NonceStore()
    data = make()
    assert refusal(data, nonces=store, now=NOW + 120) is Refusal.EXPIRED
    signed.verify(data, purpose="command", keys=KEYS, now=NOW, nonces=store)


def test_full_nonce_store_never_lets_a_replay_through() -> None:
    store = NonceStore(capacity=3)
    first = make(expires_at=NOW + 10)
    signed.verify(first, purpose="command", keys=KEYS, now=NOW, nonces=store)
    for i in range(3):
        signed.verify(
            make(expires_at=NOW + 20 + i), purpose="command", keys=KEYS, now=NOW, nonces=store
        )
    assert json.loads(first)["nonce"] not in store.seen  # forgotten...
    assert store.floor >= NOW + 10  # ...but the floor remembers how far
    assert refusal(first, nonces=store) is Refusal.REPLAYED


@given(st.binary(max_size=300))
def test_fuzz_any_bytes_are_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(SignatureRefused):
        signed.verify(data, purpose="command", keys=KEYS, now=NOW)
