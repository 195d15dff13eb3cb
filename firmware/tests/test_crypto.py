"""SHA-512, Ed25519 and signed envelopes on the node, against the shared vectors."""

from t import eq, raises, vectors

from cenode import ed25519, signed
from cenode.util import b64url_decode
from cenode.sha512 import sha512


def test_sha512_vectors() -> None:
    for v in vectors("signed.json")["sha512"]:
        eq(sha512(bytes.fromhex(v["message"])).hex(), v["digest"], str(len(v["message"]) // 2) + " bytes")


def test_ed25519_rfc8032_vectors() -> None:
    for v in vectors("signed.json")["rfc8032"]:
        pub, msg, sig = bytes.fromhex(v["public"]), bytes.fromhex(v["message"]), bytes.fromhex(v["signature"])
        eq(ed25519.verify(pub, msg, sig), True, v["message"])
        eq(ed25519.verify(pub, msg + b"x", sig), False, "other message")
        bad = bytearray(sig)
        bad[5] ^= 1
        eq(ed25519.verify(pub, msg, bytes(bad)), False, "flipped bit")
        eq(ed25519.verify(pub, msg, sig[:32] + b"\xff" * 32), False, "s >= L")
        eq(ed25519.verify(b"\xff" * 32, msg, sig), False, "not a point")
        eq(ed25519.verify(pub[:31], msg, sig), False, "short key")


def _keys(doc: dict) -> dict:
    return {k: b64url_decode(v) for k, v in doc["keys"].items()}


def test_signed_envelope_table() -> None:
    doc = vectors("signed.json")
    keys = _keys(doc)
    for v in doc["envelopes"]:
        data = v["data"].encode()
        if v["refusal"] is None:
            body, kid, exp, nonce = signed.verify(data, v["purpose"], keys, doc["now"])
            eq(kid, "ops-1", v["name"])
            eq(len(nonce), 22, v["name"])
        else:
            with raises(signed.Refused) as r:
                signed.verify(data, v["purpose"], keys, doc["now"])
            eq(r.value.reason, v["refusal"], v["name"])


def test_without_a_clock_expiry_is_not_checked() -> None:
    doc = vectors("signed.json")
    expired = [v for v in doc["envelopes"] if v["name"] == "expired"][0]
    signed.verify(expired["data"].encode(), "command", _keys(doc), None)


def test_nonces_refuse_replays_even_when_forgotten() -> None:
    n = signed.Nonces(2)
    n.check_and_add("a", 10)
    with raises(signed.Refused) as r:
        n.check_and_add("a", 10)
    eq(r.value.reason, "replayed")
    n.check_and_add("b", 20)
    n.check_and_add("c", 30)  # "a" forgotten; floor is now 10
    with raises(signed.Refused):
        n.check_and_add("a", 10)
    n.check_and_add("d", 40)


def test_base64url() -> None:
    eq(b64url_decode("AAAA"), b"\x00\x00\x00")
    eq(b64url_decode("-_8"), b"\xfb\xff")
    for bad in ("!!", "a b", "A+B/"):
        with raises(ValueError):
            b64url_decode(bad)


def test_small_order_keys_are_refused_and_their_forgeries_too() -> None:
    """R = identity, S = 0 'verifies' for a small-order key under the bare cofactorless check;
    the node refuses such keys in config.json and in verify, and such an R in any case."""
    for v in vectors("signed.json")["small_order"]:
        key = bytes.fromhex(v["key"])
        eq(ed25519.weak_key(key), True, v["name"])
        for purpose in ("command", "ota"):
            with raises(signed.Refused) as r:
                signed.verify(v[purpose].encode(), purpose, {"ops-1": key}, None)
            eq(r.value.reason, "bad-signature", v["name"] + " " + purpose)
    for v in vectors("signed.json")["rfc8032"]:
        eq(ed25519.weak_key(bytes.fromhex(v["public"])), False, "a real key")

