"""Visitor passes at the real gateway: a phone's QR code in front of the gate camera, checked
offline. A valid pass opens the relay once; the same pass again, an expired one, a forged one
and one for another gate are refused, with the reason on the screen (headless Chromium) and in
the ``access`` event the city brain gets."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from face_site import CHROMIUM_ARGS, make_site, open_screen, segment, shown, start, wait_access
from face_site import wait_shown as wait
from hil import Subscriber, http_json
from playwright.sync_api import sync_playwright

from protocols import envelope as env
from protocols.signed import b64url, public_key_raw
from protocols.visitor_pass import VisitorPass, issue
from sim.localsite import Broker, Proc
from sim.scenes import passes as scene

REFUSED = {  # what the screen says for each refusal
    "used": ("通行码已使用", "This pass was already used"),
    "expired": ("通行码已过期", "This pass has expired"),
    "forged": ("通行码无效", "This pass is not valid"),
    "wrong-gate": ("通行码不适用于此门", "This pass is for another gate"),
}


VALID_IN_S = 15


def make_pass(now: int, key: Ed25519PrivateKey, gate: str = "gate-1", age_h: float = 0) -> str:
    start = now - round(age_h * 3600)
    p = VisitorPass(
        kid="office",
        site="hil-site",
        gate=gate,
        subject="v-0301",
        not_before=start,
        not_after=start + 3600,
        pass_id=secrets.token_bytes(8),
    )
    return issue(p, key)


def test_a_pass_opens_once_and_bad_passes_are_refused_with_their_reason(
    tmp_path: Path,
    mosquitto: Broker,
    subscriber_factory: Callable[[int], Subscriber],
    procs: list[Proc],  # after the broker: the gateway stops (and flushes) before it
) -> None:
    office = Ed25519PrivateKey.generate()
    site = make_site(
        tmp_path,
        procs,
        [segment("empty", None, 1.0)],
        broker=mosquitto,
        loop=True,
        extra=f"    passes: {{keys: {{office: {b64url(public_key_raw(office))}}}, "
        "reuse_after_s: 0, skew_s: 0}\n",
    )
    sub = subscriber_factory(mosquitto.port)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            now = int(time.time())
            # valid from VALID_IN_S on: the screen is connected by then (before: not yet valid)
            valid = make_pass(now + VALID_IN_S, office)
            shows = [  # looped every 8 s: the valid pass comes back as a copy
                valid,
                make_pass(now, office, age_h=2),  # expired an hour ago
                make_pass(now, Ed25519PrivateKey.generate()),  # a key the gate does not know
                make_pass(now, office, gate="gate-2"),
            ]
            segments: list[scene.PassSegment] = []
            for text in shows:
                segments += [scene.PassSegment(text, 1.5), scene.PassSegment(None, 0.5)]
            scene.write_video(site.dir / "gate.avi", segments)
            start(site, procs)
            page = open_screen(browser, site.url("/faces/gate/screen"))  # loopback: no token
            wait(page, {"idle"}, timeout_s=20)
            connected_s = time.time() - now
            assert connected_s < VALID_IN_S, f"the screen connected after {connected_s:.1f} s"

            def refusals() -> set[str | None]:
                return {p.refusal for p in payloads(sub) if p.refusal}

            wait_access(sub, 1, timeout_s=60)
            sub.wait_for(lambda: refusals() >= set(REFUSED), 60, "every refusal")
            wait(page, {"refused"}, since=len(shown(page)) - 1, timeout_s=10)
            log = shown(page)
        finally:
            browser.close()
    ps = payloads(sub)
    print(f"\nscreen connected {connected_s:.1f} s after the passes were made")
    print("access events:", *((p.decision.value, p.refusal, p.relay) for p in ps), sep="\n  ")
    assert all(p.method == "pass" and p.liveness is None and p.score is None for p in ps)
    opened = [p for p in ps if p.decision == env.AccessDecision.GRANTED]
    assert len(opened) == 1, "a one-time pass opened the gate more than once"
    (o,) = opened
    assert (o.person, o.relay, o.uses_left, o.pass_issuer) == ("v-0301", "opened", 0, "office")
    used = [p for p in ps if p.refusal == "used"]
    assert used and all(p.pass_id == o.pass_id for p in used)
    assert ps.index(used[0]) > ps.index(o)
    for p in ps:
        if p.decision == env.AccessDecision.DENIED:
            assert (p.relay, p.reason.startswith(f"pass refused: {p.refusal}")) == (
                "not_opened",
                True,
            )
    writes = http_json(f"http://127.0.0.1:{site.control_port}/writes")
    assert [bool(w["value"]) for w in writes if w["point"] == "relay"] == [True, False]
    screen = {(e["zh"], e["en"]) for e in log}
    assert ("欢迎来访，门已打开", "Welcome, the gate is open") in screen  # noqa: RUF001
    assert all(words in screen for words in REFUSED.values()), screen
    early = [p for p in ps if p.refusal == "not-yet-valid"]  # before the screen connected
    assert all(p.pass_id == o.pass_id and ps.index(p) < ps.index(o) for p in early)
    assert all(e["name"] == "" for e in log)  # a visitor: no name on the screen
    for m in sub.snapshot():  # never the pass's text
        assert valid[5:40] not in env.encode(m.envelope).decode()


def payloads(sub: Subscriber) -> list[env.AccessPayload]:
    return [
        m.envelope.payload for m in sub.of("access") if isinstance(m.envelope, env.AccessEnvelope)
    ]
