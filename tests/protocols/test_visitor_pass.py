"""Visitor passes: the wire form byte by byte, Base45 against RFC 9285, and a reason for every
refusal."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from protocols import signed, visitor_pass
from protocols.visitor_pass import PassRefusal, PassRefused, VisitorPass

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = {"office-1": KEY.public_key()}
NOW = 1_800_000_000
PASS = VisitorPass(
    kid="office-1",
    site="sunflower",
    gate="north-gate",
    subject="v-0301-07",
    not_before=NOW - 60,
    not_after=NOW + 3600,
    uses=1,
    pass_id=bytes.fromhex("0123456789abcdef"),
)


def verify(text: str, **kw: object) -> VisitorPass:
    args: dict[str, object] = {
        "keys": KEYS,
        "site": "sunflower",
        "gate": "north-gate",
        "now": NOW,
        "max_validity_s": 72 * 3600,
    }
    args.update(kw)
    return visitor_pass.verify(text, **args)  # type: ignore[arg-type]


def refusal(text: str, **kw: object) -> PassRefusal:
    with pytest.raises(PassRefused) as info:
        verify(text, **kw)
    return info.value.reason


# RFC 9285, section 4.3 (and the examples of 4.1)
B45 = [
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
]


@pytest.mark.parametrize(("raw", "text"), B45)
def test_base45_matches_rfc_9285(raw: bytes, text: str) -> None:
    assert visitor_pass.b45encode(raw) == text
    assert visitor_pass.b45decode(text) == raw


@pytest.mark.parametrize("text", ["GGW", "A", "abc", "ZZZZ", "GG"])
def test_base45_refuses_what_rfc_9285_refuses(text: str) -> None:
    # GGW = 65535 + 1; lower case is not in the alphabet; a lone character; ZZ as one byte > 255
    with pytest.raises(ValueError, match=r"Base45|1 more than"):
        visitor_pass.b45decode(text)


@given(st.binary(max_size=300))
def test_base45_round_trips(data: bytes) -> None:
    assert visitor_pass.b45decode(visitor_pass.b45encode(data)) == data


def test_the_signed_bytes_are_the_documented_layout() -> None:
    body = PASS.body()
    assert body == (
        bytes([1, 0])
        + (NOW - 60).to_bytes(4, "big")
        + (NOW + 3600).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + bytes.fromhex("0123456789abcdef")
        + b"\x08office-1\x09sunflower\x0anorth-gate\x09v-0301-07"
    )
    text = visitor_pass.issue(PASS, KEY)
    raw = visitor_pass.b45decode(text.removeprefix("CEP1:"))
    assert raw[:-64] == body
    KEY.public_key().verify(raw[-64:], b"cityedge-pass-v1\n" + body)  # the documented domain
    assert len(text) < 200 and set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def test_a_good_pass_verifies() -> None:
    p = verify(visitor_pass.issue(PASS, KEY))
    assert p == PASS and p.id_hex == "0123456789abcdef"


def test_a_persons_pass_keeps_its_flag() -> None:
    p = dataclasses.replace(PASS, subject="p-0102", person=True, uses=3)
    assert verify(visitor_pass.issue(p, KEY)) == p


def flip(text: str, index: int) -> str:
    raw = bytearray(visitor_pass.b45decode(text.removeprefix("CEP1:")))
    raw[index] ^= 0x01
    return "CEP1:" + visitor_pass.b45encode(bytes(raw))


GOOD = visitor_pass.issue(PASS, KEY)


@pytest.mark.parametrize(
    ("text", "kw", "reason"),
    [
        (visitor_pass.issue(dataclasses.replace(PASS, not_after=NOW), KEY), {}, "expired"),
        (GOOD, {"now": NOW + 3600}, "expired"),
        (GOOD, {"now": NOW - 200}, "not-yet-valid"),
        (GOOD, {"now": NOW - 100}, None),  # within the 60 s skew of its start
        (GOOD, {"gate": "south-gate"}, "wrong-gate"),
        (GOOD, {"site": "other-site"}, "wrong-gate"),
        (visitor_pass.issue(PASS, OTHER), {}, "forged"),  # signed by someone else
        (flip(GOOD, 12), {}, "forged"),  # the pass id changed
        (flip(GOOD, 3), {}, "forged"),  # the window changed
        (flip(GOOD, -1), {}, "forged"),  # the signature changed
        (visitor_pass.issue(dataclasses.replace(PASS, kid="office-9"), KEY), {}, "unknown-key"),
        (GOOD, {"max_validity_s": 3000}, "too-long"),
        ("CEP1:", {}, "malformed"),
        ("https://example.com/pass", {}, "malformed"),
        ("CEP1:" + "A" * 600, {}, "malformed"),
        ("CEP1:abc", {}, "malformed"),
        ("CEP1:" + visitor_pass.b45encode(b"\x02" + PASS.body()[1:] + bytes(64)), {}, "malformed"),
        ("CEP1:" + visitor_pass.b45encode(PASS.body()[:-3] + bytes(64)), {}, "malformed"),
        ("CEP1:" + visitor_pass.b45encode(PASS.body() + b"x" + bytes(64)), {}, "malformed"),
    ],
    ids=[
        "expired",
        "expired now",
        "too early",
        "within the skew",
        "another gate",
        "another site",
        "another key",
        "pass id changed",
        "window changed",
        "signature changed",
        "unknown issuer",
        "window too long",
        "empty",
        "not a pass",
        "huge",
        "not base45",
        "version 2",
        "cut short",
        "trailing byte",
    ],
)
def test_every_refusal_has_its_reason(text: str, kw: dict[str, object], reason: str | None) -> None:
    if reason is None:
        assert verify(text, **kw) == PASS
    else:
        assert refusal(text, **kw).value == reason


def test_weak_or_published_issuer_keys_are_not_trusted() -> None:
    published = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    text = visitor_pass.issue(PASS, published)
    assert refusal(text, keys={"office-1": published.public_key()}) == PassRefusal.UNKNOWN_KEY
    with pytest.raises(ValueError, match="small-order"):  # refused where keys are loaded, too
        signed.public_key_from_raw(bytes([1]) + bytes(31))


def test_a_signed_command_never_passes_as_a_pass() -> None:
    """Another domain: the same key's command signature over the same bytes is refused."""
    sig = KEY.sign(b"cityedge-signed-v1\n" + PASS.body())
    text = "CEP1:" + visitor_pass.b45encode(PASS.body() + sig)
    assert refusal(text) == PassRefusal.FORGED


@given(st.text(max_size=400))
def test_any_text_is_a_pass_or_a_refusal(text: str) -> None:
    with contextlib.suppress(PassRefused):
        verify(text)


@given(st.binary(max_size=260))
def test_any_bytes_are_a_pass_or_a_refusal(data: bytes) -> None:
    with contextlib.suppress(PassRefused):
        verify("CEP1:" + visitor_pass.b45encode(data))


def test_bad_passes_cannot_be_made() -> None:
    for change in ({"gate": "bad gate"}, {"uses": 0}, {"not_after": NOW - 100}, {"pass_id": b"x"}):
        with pytest.raises(ValueError, match=r"gate|uses|window|pass_id"):
            dataclasses.replace(PASS, **change)


def test_keys_map_types() -> None:
    assert isinstance(KEYS["office-1"], Ed25519PublicKey)
