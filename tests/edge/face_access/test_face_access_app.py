"""The face_access app with real models, a virtual clock and a fake gate behind the real
actuator path: who opens the relay, for how long, once per decision; what is reported."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from edge.face_access.app import FaceAccessApp
from edge.face_access.liveness.passive import PassiveScores
from edge.face_access.pipeline import FaceAnalysis
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env
from tests.edge.face_access.harness import CONSENT, OPEN_S, Harness, config
from tests.edge.face_access.scenes import still


async def test_an_enrolled_person_opens_the_relay_for_the_set_time(harness: Harness) -> None:
    h = harness
    await h.feed(still("obama2.jpg"))
    [a] = h.access()
    assert (a.decision, a.person, a.relay, a.reason) == (
        env.AccessDecision.GRANTED,
        "p-obama",
        "opened",
        "matched",
    )
    assert a.score is not None and a.threshold == 0.5 and a.score <= a.threshold
    assert a.method == "face" and a.camera == "cam-1" and a.reader is None
    assert a.liveness is not None
    assert a.liveness.policy == "record" and a.liveness.passive is not None
    assert a.liveness.live is None and a.liveness.challenge is None  # record: reported only
    assert set(a.models) == {
        "mtcnn-pnet",
        "mtcnn-rnet",
        "mtcnn-onet",
        "dlib-resnet-embedding",
        "human-antispoof",
        "human-liveness",
        "facemesh",
        "iris",
    }
    assert a.latency_ms > 0
    assert h.gate.writes == [("relay", True)]
    await h.clock.advance(OPEN_S - 0.1)
    assert h.gate.writes == [("relay", True)]
    await h.clock.advance(0.2)
    assert h.gate.writes == [("relay", True), ("relay", False)]
    # the envelope never carries an image or a template
    raw = env.encode(h.events[0])
    payload = json.loads(raw)["payload"]
    assert set(payload) == {
        "decision",
        "method",
        "person",
        "score",
        "threshold",
        "reason",
        "refusal",
        "liveness",
        "latency_ms",
        "camera",
        "reader",
        "pass_id",
        "pass_issuer",
        "uses_left",
        "relay",
        "models",
    }
    assert [k for k in ("refusal", "reader", "pass_id", "pass_issuer") if payload[k]] == []
    assert len(raw) < 1400


async def test_an_unknown_face_does_not_open_and_is_reported_once(harness: Harness) -> None:
    h = harness
    biden = still("biden.jpg")
    await h.feed(biden, 1)
    await h.feed(biden, 2)
    [a] = h.access()
    assert (a.decision, a.person, a.relay, a.reason) == (
        env.AccessDecision.DENIED,
        "unknown",
        "not_opened",
        "unknown face",
    )
    assert a.score is not None and a.score > 0.5
    assert h.gate.writes == []


async def test_one_opening_per_decision_and_a_cooldown_per_person(harness: Harness) -> None:
    h = harness
    await h.app.call(
        h.app.service.enroll,
        "p-biden",
        "Biden",
        h.app.service.models.asset("biden.jpg").read_bytes(),
        0.0,
        consent=CONSENT,
    )
    await h.app.reload()
    obama = still("obama2.jpg")
    await h.feed(obama, 1)
    await h.feed(obama, 2)  # still standing there: within the cooldown, no second decision
    await h.feed(still("biden.jpg"), 3)  # the next person while the gate is open
    decisions = [(a.person, a.relay) for a in h.access()]
    assert decisions == [("p-obama", "opened"), ("p-biden", "busy")]
    assert h.gate.writes == [("relay", True)]
    await h.clock.advance(OPEN_S + 0.1)
    assert h.gate.writes == [("relay", True), ("relay", False)]


async def test_decisions_are_audited_and_shown_on_the_screen(harness: Harness) -> None:
    h = harness
    q = h.app.screen.subscribe()
    await h.feed(still("obama2.jpg"))
    _, state = q.get_nowait()
    assert state["state"] == "granted" and state["method"] == "face"
    assert state["name"] == "奥*马 O***a"  # masked by default (screen.names)
    v = h.app.service.audit.verify()
    assert v.ok and v.entries == 2  # enrolment + decision
    last = h.app.service.audit.path.read_text(encoding="utf-8").splitlines()[-1]
    assert '"decision"' in last and "p-obama" in last and "Obama" not in last


async def test_a_gate_that_does_not_answer_is_not_granted_and_the_screen_says_intercom(
    harness: Harness,
) -> None:
    """Before: ``granted`` (event and screen) although the write failed."""
    h = harness
    q = h.app.screen.subscribe()
    h.gate.fail = True
    await h.feed(still("obama2.jpg"))
    [a] = h.access()
    assert (a.decision, a.person, a.relay) == (env.AccessDecision.DENIED, "p-obama", "failed")
    assert "did not open" in a.reason and "no reply" in a.reason and "intercom" in a.reason
    _, state = q.get_nowait()
    assert state["state"] == "intercom" and "name" not in state


async def test_a_relay_that_reads_back_open_false_is_not_granted(harness: Harness) -> None:
    """The write was answered but the relay did not take it (a local/remote switch): the
    read-back decides, not the write."""
    h = harness
    q = h.app.screen.subscribe()
    h.gate.reads_back = False
    await h.feed(still("obama2.jpg"))
    [a] = h.access()
    assert (a.decision, a.relay) == (env.AccessDecision.DENIED, "failed")
    assert "read back False" in a.reason
    assert q.get_nowait()[1]["state"] == "intercom"
    await h.clock.advance(OPEN_S + 1)
    assert h.gate.writes == [("relay", True)]  # no closing cycle for a gate that never opened


async def test_the_door_contact_is_followed_and_readings_do_not_pile_up(harness: Harness) -> None:
    h = harness
    for value in (True, False):
        await h.inbox.put(ReadingBatch("bus", "gate-1", 0.0, (Reading("door_closed", value),)))
    await asyncio.sleep(0.05)
    assert h.app.door_closed is False and h.inbox.depth == 0


def analysis(embedding: np.ndarray | None, live: float | None) -> FaceAnalysis:
    passive = None if live is None else PassiveScores(live, live)
    return FaceAnalysis(faces=1, embedding=embedding, passive=passive)


@pytest.mark.parametrize(
    ("policy", "distance", "live_score", "granted", "person", "reason", "live"),
    [
        ("passive", 0.3, 0.9, True, "p", "matched", True),
        ("passive", 0.3, 0.2, False, "p", "not live: passive score 0.20 < 0.5", False),
        ("passive", 0.3, 0.5, True, "p", "matched", True),  # the limit itself is live
        (
            "passive",
            0.3,
            None,
            False,
            "p",
            "not live: the passive liveness models did not run",
            False,
        ),
        ("record", 0.3, 0.1, True, "p", "matched", None),
        ("off", 0.3, None, True, "p", "matched", None),
        ("passive", 0.7, 0.9, False, "unknown", "unknown face", True),
        ("record", 0.5, 0.9, True, "p", "matched", None),  # the threshold itself is accepted
        # challenge policies: not decided yet, a challenge first
        ("challenge_always", 0.3, 0.9, False, "p", "challenge", None),
        ("challenge_on_doubt", 0.3, 0.2, False, "p", "challenge", None),
        ("challenge_on_doubt", 0.3, 0.9, True, "p", "matched", True),
        ("challenge_always", 0.7, 0.9, False, "unknown", "unknown face", True),
        # without the passive models' score a challenge policy still challenges
        ("challenge_always", 0.3, None, False, "p", "challenge", None),
    ],
)
def test_decision_table(
    tmp_path: Path,
    policy: str,
    distance: float,
    live_score: float | None,
    granted: bool,
    person: str,
    reason: str,
    live: bool | None,
) -> None:
    from edge.face_access.gallery import Gallery

    cfg = config(tmp_path, liveness=policy)
    app = FaceAccessApp.__new__(FaceAccessApp)
    app.config = cfg
    t = np.zeros(128, np.float32)
    q = t.copy()
    q[0] = distance
    d = app.decide(analysis(q, live_score), Gallery(["p"], t[None]))
    assert d is not None
    assert (d.granted, d.person, d.reason) == (granted, person, reason)
    assert d.challenge == (reason == "challenge")
    assert d.liveness.live == live
    assert d.liveness.policy == policy


def test_refuse_below_refuses_without_a_challenge(tmp_path: Path) -> None:
    from edge.face_access.gallery import Gallery

    cfg = config(tmp_path, liveness="challenge_always", refuse_below=0.3)
    app = FaceAccessApp.__new__(FaceAccessApp)
    app.config = cfg
    t = np.zeros(128, np.float32)
    d = app.decide(analysis(t, 0.1), Gallery(["p"], t[None]))
    assert d is not None and not d.granted and not d.challenge
    assert d.reason == "not live: passive score 0.10 < 0.3 (refuse_below)"
    assert d.liveness.live is False
    assert app.decide(analysis(None, 0.1), Gallery(["p"], t[None])) is None


CHALLENGE = {"liveness": "challenge_always", "challenge": {"step_s": 1.0, "answer_s": 0.8}}


async def feed_for(h: Harness, image: np.ndarray, seconds: float, seq: int = 1) -> int:
    """The same picture as camera frames about 10 per second for ``seconds`` of real time (the
    frames carry their real capture time, as the camera source stamps them)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not h.access():
        await h.feed(image, seq)
        seq += 1
        await asyncio.sleep(0.1)
    return seq


@pytest.mark.parametrize("harness", [CHALLENGE], indirect=True)
async def test_a_photo_held_still_is_challenged_and_refused(harness: Harness) -> None:
    """challenge_always: the match alone opens nothing; the screen asks for an action, a photo
    cannot give it, and the attempt ends refused with what was asked and why."""
    h = harness
    screen = h.app.screen.subscribe()
    await h.feed(still("obama2.jpg"))
    assert h.access() == [] and h.app.challenge is not None  # challenged, not decided
    await feed_for(h, still("obama2.jpg"), 6.0, seq=2)
    [a] = h.access()
    assert (a.decision, a.person, a.relay) == (env.AccessDecision.DENIED, "p-obama", "not_opened")
    assert a.liveness is not None
    assert a.liveness.policy == "challenge_always" and a.liveness.live is False
    c = a.liveness.challenge
    assert c is not None and c.outcome == "timeout" and c.done == 0, c
    assert a.reason.startswith("not live: challenge timeout (no ")
    assert a.liveness.passive is not None  # the passive scores travel beside it
    assert h.gate.writes == [] and h.app.challenge is None
    shown = []
    while not screen.empty():
        shown.append(screen.get_nowait()[1])  # (time, message)
    prompts = [s for s in shown if s["state"] == "challenge"]
    assert prompts and prompts[0]["action"] == c.actions[0], shown
    assert all(set(s) >= {"action", "seconds_left"} for s in prompts)
    assert all(isinstance(s["seconds_left"], int) and 0 <= s["seconds_left"] <= 1 for s in prompts)
    assert shown[-1]["state"] != "challenge"  # the screen does not keep asking


@pytest.mark.parametrize("harness", [CHALLENGE], indirect=True)
async def test_a_face_that_leaves_during_the_challenge_ends_it(harness: Harness) -> None:
    h = harness
    await h.feed(still("obama2.jpg"))
    assert h.app.challenge is not None
    await asyncio.sleep(1.1)  # no frame for longer than step_s (real time, as frames carry)
    for _ in range(3):
        await h.clock.advance(0.5)  # the app's watchdog looks every 0.5 s of its clock
        if h.access():
            break
    [a] = h.access()
    assert a.decision == env.AccessDecision.DENIED and a.relay == "not_opened"
    assert a.liveness is not None and a.liveness.challenge is not None
    assert a.liveness.challenge.outcome == "face_lost"
    assert h.app.challenge is None and h.gate.writes == []
