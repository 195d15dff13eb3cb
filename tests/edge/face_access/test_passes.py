"""Visitor passes and cards at the gate: the real app with its real QR reader on camera frames
of a phone, its use counter on disk, and the card/PIN path; every way one ``access`` event
with its method."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.face_access.passes import PassLedger
from edge.readings import Credential
from protocols import envelope as env
from protocols import visitor_pass
from protocols.signed import b64url, public_key_raw
from protocols.visitor_pass import PassRefusal, PassRefused, VisitorPass
from sim.scenes import passes as scene
from tests.edge.face_access.harness import CONSENT, OPEN_S, Harness

ISSUER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("9d" * 16 + "41" * 16))
PASSES = {"passes": {"keys": {"office-1": b64url(public_key_raw(ISSUER))}}}


def make_pass(**change: object) -> VisitorPass:
    now = 1_700_000_000  # where the harness's virtual clock starts
    p = VisitorPass(
        kid="office-1",
        site="s",
        gate="gate-1",
        subject="v-0301-07",
        not_before=now - 10,
        not_after=now + 3600,
        pass_id=bytes(range(8)),
    )
    return dataclasses.replace(p, **change)  # type: ignore[arg-type]


async def show(h: Harness, text: str, seq: int = 1) -> list[env.AccessPayload]:
    """The phone held up to the camera; the access events made so far."""
    await h.feed(scene.still(text), seq)
    return h.access()


@pytest.mark.parametrize("harness", [PASSES], indirect=True)
async def test_a_valid_pass_opens_once_and_a_copy_is_refused_as_used(harness: Harness) -> None:
    h = harness
    q = h.app.screen.subscribe()
    text = visitor_pass.issue(make_pass(), ISSUER)
    [a] = await show(h, text)
    assert (a.decision, a.method, a.person, a.relay) == (
        env.AccessDecision.GRANTED,
        "pass",
        "v-0301-07",
        "opened",
    )
    assert (a.pass_id, a.pass_issuer, a.uses_left, a.camera) == (
        "0001020304050607",
        "office-1",
        0,
        "cam-1",
    )
    assert a.liveness is None and a.score is None and a.models == {}
    _, shown = q.get_nowait()
    assert shown["state"] == "granted" and shown["visitor"] and shown["name"] is None
    assert h.gate.writes == [("relay", True)]
    await show(h, text, 2)  # still held up while walking through: not a second use
    assert len(h.access()) == 1
    await h.clock.advance(OPEN_S + 0.1)
    h.app._pass_quiet.clear()  # later: the copy comes back
    ps = await show(h, text, 3)
    assert (ps[-1].decision, ps[-1].refusal, ps[-1].relay) == (
        env.AccessDecision.DENIED,
        "used",
        "not_opened",
    )
    assert ps[-1].reason.startswith("pass refused: used")
    assert h.gate.writes == [("relay", True), ("relay", False)]
    raw = env.encode(h.events[-1]).decode()
    assert text[5:40] not in raw  # never the pass's text


@pytest.mark.parametrize("harness", [PASSES], indirect=True)
@pytest.mark.parametrize(
    ("change", "key", "refusal", "person"),
    [
        ({"not_before": 1_000, "not_after": 2_000}, ISSUER, "expired", "v-0301-07"),
        ({"gate": "south-gate"}, ISSUER, "wrong-gate", "v-0301-07"),
        ({}, Ed25519PrivateKey.generate(), "forged", "unknown"),
        ({"kid": "someone"}, ISSUER, "unknown-key", "unknown"),
    ],
    ids=["expired", "another gate", "forged", "unknown issuer"],
)
async def test_bad_passes_are_refused_with_a_reason_on_the_screen_and_in_the_event(
    harness: Harness,
    change: dict[str, object],
    key: Ed25519PrivateKey,
    refusal: str,
    person: str,
) -> None:
    h = harness
    q = h.app.screen.subscribe()
    [a] = await show(h, visitor_pass.issue(make_pass(**change), key))
    assert (a.decision, a.method, a.refusal, a.person, a.relay) == (
        env.AccessDecision.DENIED,
        "pass",
        refusal,
        person,
        "not_opened",
    )
    _, shown = q.get_nowait()
    assert (shown["state"], shown["why"], shown["method"]) == ("refused", refusal, "pass")
    assert h.gate.writes == []


def test_the_use_counter_survives_a_restart(tmp_path: Path) -> None:
    """A copy of a used pass opens nothing after the gateway restarts (the count is on disk
    before the relay is set)."""
    p = dataclasses.replace(make_pass(), uses=2)
    now = 1_700_000_000  # within the pass's window
    ledger = PassLedger(tmp_path / "passes.db")
    assert ledger.use(p, now) == 1
    ledger.close()
    ledger = PassLedger(tmp_path / "passes.db")  # the restart
    assert ledger.use(p, now) == 0
    with pytest.raises(PassRefused) as info:
        ledger.use(p, now)
    assert info.value.reason is PassRefusal.USED and "2 times of 2" in str(info.value)
    other = dataclasses.replace(p, pass_id=bytes(8))
    assert ledger.use(other, now) == 1  # another pass has its own count
    ledger.close()
    ledger = PassLedger(tmp_path / "passes.db")
    ledger.use(dataclasses.replace(p, pass_id=bytes([9]) * 8), now + 2 * 86_400)
    assert ledger.used(p) == 0  # forgotten a day after it expired (its window refuses it)
    ledger.close()


def cred(kind: str, value: str) -> Credential:
    return Credential("reader-1", kind, value, time.time(), time.monotonic())


@pytest.mark.parametrize(
    "harness", [{"readers": {"names": ["reader-1"], "max_failures": 3}}], indirect=True
)
async def test_cards_and_pins_open_for_their_owner_and_guessing_locks_the_reader(
    harness: Harness,
) -> None:
    h = harness
    svc, now = h.app.service, h.clock.time()
    svc.add_card("p-obama", "12:34567", now)
    svc.set_pin("p-obama", "480613", now)
    a = await h.app.handle_credential(cred("card", "12:34567"))
    assert (a.allowed, a.person, a.method, a.reader) == (True, "p-obama", "card", "reader-1")
    [e] = h.access()
    assert (e.decision, e.method, e.reader, e.camera, e.relay) == (
        env.AccessDecision.GRANTED,
        "card",
        "reader-1",
        None,
        "opened",
    )
    await h.clock.advance(OPEN_S + 0.1)
    a = await h.app.handle_credential(cred("pin", "480613"))
    assert a.allowed and h.access()[-1].method == "pin"
    await h.clock.advance(OPEN_S + 0.1)
    for guess in ("111111", "123456"):
        a = await h.app.handle_credential(cred("pin", guess))
        assert (a.allowed, a.refusal) == (False, "unknown")
    a = await h.app.handle_credential(cred("pin", "222222"))  # the third wrong one
    assert (a.allowed, a.refusal) == (False, "locked")
    a = await h.app.handle_credential(cred("pin", "480613"))  # even the right PIN, for now
    assert (a.allowed, a.refusal) == (False, "locked")
    raw = b"".join(env.encode(e) for e in h.events).decode()
    assert "480613" not in raw and "34567" not in raw  # never a PIN or a card number
    stored = (h.app.service.store.path).read_bytes()
    assert b"480613" not in stored and b"34567" not in stored


async def test_enrolled_cards_and_pins_are_checked(harness: Harness) -> None:
    from edge.face_access.service import CredentialError

    svc, now = harness.app.service, harness.clock.time()
    with pytest.raises(CredentialError, match="FACILITY:NUMBER"):
        svc.add_card("p-obama", "1234567", now)
    with pytest.raises(CredentialError, match="6-12 digits"):
        svc.set_pin("p-obama", "1234", now)
    with pytest.raises(CredentialError, match="too easy"):
        svc.set_pin("p-obama", "234567", now)
    with pytest.raises(CredentialError, match="no person"):
        svc.add_card("p-nobody", "1:1", now)
    svc.add_card("p-obama", "1:1", now)
    svc.enroll("p-card", "卡", None, now, consent=CONSENT)
    with pytest.raises(CredentialError, match="another person"):
        svc.add_card("p-card", "1:1", now)
    assert svc.credential_owner("card", "1:1") == "p-obama"
    assert svc.remove_credentials("p-obama", "card", now) == 1
    assert svc.credential_owner("card", "1:1") is None
