"""The active challenge and the planarity check, on scripted observations (no models).

A scripted face is a small 3-D point cloud (a nose in front of the cheeks) turned about the
vertical axis and projected, or the same points on a plane (a photo); its eyes close and open as
the script says. The challenge prompts; the script answers like a person, too early, the wrong
way, too late or not at all."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge.face_access.app import challenge_settings
from edge.face_access.config import FaceAccessConfig
from edge.face_access.liveness.challenge import (
    ACTIONS,
    Action,
    Challenge,
    ChallengeSettings,
    Observation,
    sequences,
)
from edge.face_access.liveness.mesh import planar_residual
from tests.edge.face_access.harness import config

FPS = 10.0
SCALE = 60.0  # eye distance in pixels
OPEN = 0.3


def _cloud(depth: float) -> np.ndarray:
    """N x 3 points of a face-like cloud: a grid, the middle pushed towards the camera."""
    xs, ys = np.meshgrid(np.linspace(-50, 50, 6), np.linspace(-60, 60, 7))
    x, y = xs.ravel(), ys.ravel()
    z = depth * np.exp(-(x**2 + y**2) / (2 * 30.0**2))
    return np.stack([x, y, z], axis=1)


HEAD = _cloud(40.0)
PHOTO = _cloud(0.0)


def project(points: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Turned ``yaw_deg`` (positive: the nose to the image's right) and seen from in front."""
    a = math.radians(yaw_deg)
    x = points[:, 0] * math.cos(a) + points[:, 2] * math.sin(a)
    return np.stack([320 + x, 240 + points[:, 1]], axis=1)


@dataclass
class Person:
    """Answers each prompt ``reaction_s`` later with the ``answers`` given (default: what was
    asked); ``flat``: a photo turned the same way."""

    reaction_s: float = 0.5
    flat: bool = False
    answers: dict[int, Action | None] = field(default_factory=dict)  # step -> what it does
    comes_back: bool = True
    fixed: np.ndarray | None = None  # landmarks that never move (degenerate), if given
    gestures: list[tuple[str, float]] = field(default_factory=list)  # (turn sign or blink, start)

    def prompt(self, step: int, action: Action, t: float) -> None:
        done = self.answers.get(step, action)
        if done is not None:
            self.gestures.append((done, t + self.reaction_s))

    def pose(self, t: float) -> tuple[float, float]:
        yaw, openness = 0.0, OPEN
        for action, start in self.gestures:
            u = t - start
            if u < 0:
                continue
            if action == "blink":
                if u < 0.2:
                    openness = 0.05
            else:
                sign = 1.0 if action == "turn_left" else -1.0
                back = 0.7 if self.comes_back else math.inf
                if u < 0.3:
                    yaw += sign * 25 * u / 0.3
                elif u < back:
                    yaw += sign * 25.0
                elif u < back + 0.3:
                    yaw += sign * 25 * (1 - (u - back) / 0.3)
        return yaw, openness

    def observe(self, t: float) -> Observation:
        yaw, openness = self.pose(t)
        rigid = project(PHOTO if self.flat else HEAD, yaw) if self.fixed is None else self.fixed
        return Observation(t, yaw, openness, rigid, SCALE)


def drive(c: Challenge, person: Person, until_s: float = 30.0) -> list[tuple[float, Action]]:
    """Frames at FPS until the challenge ends; returns the prompts (time, action)."""
    prompts: list[tuple[float, Action]] = []
    t = c.started
    while not c.done and t < c.started + until_s:
        c.observe(person.observe(t))
        if c.want_prompt(t):
            c.prompted(t)
            assert c.action is not None
            prompts.append((t, c.action))
            person.prompt(c.step, c.action, t)
        t = round(t + 1 / FPS, 6)
    return prompts


def challenge(*actions: Action, **settings: float) -> Challenge:
    return Challenge(tuple(actions), ChallengeSettings(**settings), random.Random(7), 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("actions", list(itertools.product(ACTIONS, repeat=2)))
def test_a_cooperative_person_passes_every_sequence(actions: tuple[Action, Action]) -> None:
    c = challenge(*actions)
    prompts = drive(c, Person())
    assert c.outcome == "passed", c.summary()
    assert [a for _, a in prompts] == list(actions)
    assert c.elapsed is not None and 0 < c.elapsed < 2 * c.settings.step_s
    if "blink" in actions and len(set(actions)) == 1:
        assert c.planarity is None  # no turn: no planarity figure
    else:
        assert c.planarity is not None and c.planarity >= c.settings.planarity_limit


def test_a_photo_turned_as_asked_is_flat() -> None:
    c = challenge("turn_left", "turn_right")
    drive(c, Person(flat=True))
    assert c.outcome == "flat", c.summary()
    assert c.planarity is not None and c.planarity < 0.005
    assert "photo or a screen" in c.detail


def test_the_planarity_limit_zero_turns_the_check_off() -> None:
    c = challenge("turn_left", planarity_limit=0.0)
    drive(c, Person(flat=True))
    assert c.outcome == "passed"


@pytest.mark.parametrize(
    ("actions", "person", "outcome", "detail"),
    [
        # a turn that begins before anyone could have read the prompt
        (("turn_left",), Person(reaction_s=0.0), "too_early", "before the prompt"),
        (("turn_left",), Person(answers={0: "turn_right"}), "wrong_action", "the other way"),
        (("blink",), Person(answers={0: "turn_left"}), "wrong_action", "when a blink was asked"),
        (("turn_right",), Person(answers={0: None}), "timeout", "no turn_right began within 1.5 s"),
        (("blink",), Person(answers={0: None}), "timeout", "no blink began within 1.5 s"),
        # a gesture that falls in the step, but later than a person who read the prompt
        (("turn_left",), Person(reaction_s=2.0), "timeout", "began within 1.5 s"),
        (("blink",), Person(reaction_s=2.0), "timeout", "began within 1.5 s"),
        # a blink too soon after the prompt is not the answer (and no other comes)
        (("blink",), Person(reaction_s=0.05), "timeout", "no blink began"),
        # the head stays turned after the last step
        (("turn_left",), Person(comes_back=False), "timeout", "did not come back to frontal"),
        # the second step answered with the first step's action
        (("blink", "turn_left"), Person(answers={1: "blink"}), "timeout", "no turn_left began"),
    ],
)
def test_answers_that_fail(
    actions: tuple[Action, ...], person: Person, outcome: str, detail: str
) -> None:
    c = challenge(*actions)
    drive(c, person)
    assert c.outcome == outcome, c.summary()
    assert detail in c.detail
    assert c.finished_at is not None


def test_an_unanswered_prompt_fails_at_answer_s_not_at_step_s() -> None:
    c = challenge("turn_left", answer_s=1.0, step_s=4.0)
    [(prompted, _)] = drive(c, Person(answers={0: None}))
    assert c.finished_at is not None
    assert 1.0 < c.finished_at - prompted <= 1.0 + 1.5 / FPS


def test_the_prompt_waits_for_a_frontal_face() -> None:
    """A head that is turned when the prompt would be due is not prompted (a turn already
    under way would otherwise answer it)."""
    c = challenge("turn_left")
    for k in range(5):  # the resting pose: the median of the frames before the first prompt
        c.observe(Observation(k * 0.01, 0.0, OPEN, project(HEAD, 0.0), SCALE))
    assert c.prompt_due is not None
    turned = Observation(1.0, 10.0, OPEN, project(HEAD, 10.0), SCALE)
    c.observe(turned)
    assert not c.want_prompt(1.0)
    c.observe(Observation(1.1, 0.5, OPEN, project(HEAD, 0.5), SCALE))
    assert c.want_prompt(1.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["yaw", "openness", "rigid", "scale", "t"])
def test_a_frame_with_numbers_that_are_not_finite_is_skipped(where: str, bad: float) -> None:
    c = challenge("turn_left")
    good = Observation(0.0, 0.0, OPEN, project(HEAD, 0.0), SCALE)
    c.observe(good)
    rigid = project(HEAD, 0.0)
    if where == "rigid":
        rigid[3, 1] = bad
    obs = Observation(
        bad if where == "t" else 0.1,
        bad if where == "yaw" else 30.0,  # would be a turn the wrong moment, were it taken
        bad if where == "openness" else OPEN,
        rigid,
        bad if where == "scale" else SCALE,
    )
    assert not obs.usable
    assert c.observe(obs) == "running"
    assert c.phase == "neutral" and c.step == 0


def test_prompted_out_of_turn_is_a_programming_error() -> None:
    c = challenge("blink")
    c.prompted(0.0)
    with pytest.raises(RuntimeError, match="prompted in phase prompted"):
        c.prompted(0.1)  # a second prompt while one is open


def test_a_failed_challenge_stays_failed() -> None:
    c = challenge("blink")
    c.fail("face_lost", "gone", 1.0)
    c.fail("timeout", "later", 2.0)
    assert (c.outcome, c.detail, c.finished_at) == ("face_lost", "gone", 1.0)
    assert c.observe(Observation(3.0, 0.0, OPEN, project(HEAD, 0.0), SCALE)) == "face_lost"


def test_random_challenges_draw_only_the_configured_actions() -> None:
    settings = ChallengeSettings(actions=("turn_left", "turn_right"), steps=3)
    rng = random.Random(1)
    seen = {Challenge.random(settings, rng, 0.0).actions for _ in range(400)}
    assert all(len(a) == 3 and set(a) <= {"turn_left", "turn_right"} for a in seen)
    assert len(seen) == sequences(settings.actions, settings.steps) == 8
    assert sequences(ACTIONS, 2) == 9 and sequences(("blink", "blink"), 2) == 1


# -- planarity -------------------------------------------------------------------------------
def test_a_plane_has_no_residual_and_a_head_has_one() -> None:
    ref = project(HEAD, 0.0)
    for yaw in (-30.0, -15.0, 15.0, 30.0):
        assert planar_residual(project(PHOTO, 0.0), project(PHOTO, yaw), SCALE) < 1e-6
        assert planar_residual(ref, project(HEAD, yaw), SCALE) > 0.02
    # a plane under any homography (tilted, moved, perspective)
    h = np.array([[1.1, 0.2, 5.0], [-0.1, 0.9, -3.0], [1e-4, -2e-4, 1.0]])
    pts = project(PHOTO, 0.0)
    moved = np.c_[pts, np.ones(len(pts))] @ h.T
    assert planar_residual(pts, moved[:, :2] / moved[:, 2:], SCALE) < 1e-6


@pytest.mark.parametrize(
    ("reference", "current", "scale", "message"),
    [
        (np.zeros((10, 2)), np.zeros((9, 2)), SCALE, "same shape"),
        (np.zeros((10, 3)), np.zeros((10, 3)), SCALE, "N x 2"),
        (np.zeros(10), np.zeros(10), SCALE, "N x 2"),
        (np.zeros((4, 2)), np.zeros((4, 2)), SCALE, "at least 5 points"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), SCALE, "NaN or infinity"),
        (np.zeros((10, 2)), np.full((10, 2), np.inf), SCALE, "NaN or infinity"),
        (project(HEAD, 0), project(HEAD, 20), 0.0, "positive"),
        (project(HEAD, 0), project(HEAD, 20), -1.0, "positive"),
        (project(HEAD, 0), project(HEAD, 20), math.nan, "positive"),
    ],
)
def test_planarity_refuses_malformed_points(
    reference: np.ndarray, current: np.ndarray, scale: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        planar_residual(reference, current, scale)


def test_degenerate_points_are_no_evidence_of_a_head() -> None:
    """All points in one place (or on a line): no homography, NaN; the challenge counts no
    parallax, so a degenerate landmark set cannot pass as a head."""
    same = np.full((10, 2), 100.0)
    assert math.isnan(planar_residual(same, same, SCALE))
    c = challenge("turn_left")
    drive(c, Person(fixed=same))
    assert c.outcome == "flat" and c.planarity == 0.0


# -- the policy's configuration --------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"liveness": "enforce"}, "'enforce' is no longer a policy: write 'passive'"),
        ({"liveness": "sometimes"}, "challenge_always"),
        ({"liveness_limit": 0.2}, "liveness_limit belonged to the FaceAntiSpoofing model"),
        ({"passive_limit": 1.5}, "passive_limit"),
        ({"passive_limit": "high"}, "passive_limit"),
        ({"refuse_below": -0.1}, "refuse_below"),
        ({"challenge": {"actions": []}}, "at least 1 item"),
        ({"challenge": {"actions": ["blink", "blink"]}}, "each action once"),
        ({"challenge": {"actions": ["nod"]}}, "'blink', 'turn_left' or 'turn_right'"),
        ({"challenge": {"steps": 0}}, "steps"),
        ({"challenge": {"steps": 5}}, "steps"),
        ({"challenge": {"step_s": 0.2}}, "step_s"),
        ({"challenge": {"answer_s": 5.0}}, "answer_s (5) is longer than step_s (4)"),
        ({"challenge": {"min_reaction_s": 0.9, "answer_s": 0.8}}, "leaves no time to answer"),
        ({"challenge": {"turn_deg": 2}}, "turn_deg"),
        ({"challenge": {"planarity_limit": -0.01}}, "planarity_limit"),
        ({"challenge": {"stepz": 2}}, "Extra inputs are not permitted"),
        ({"challenge": "always"}, "challenge"),
    ],
)
def test_wrong_liveness_settings_are_refused_with_what_to_do(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        config(tmp_path, **overrides)
    assert message in str(err.value)


def test_the_default_policy_challenges_every_face(tmp_path: Path) -> None:
    cfg = FaceAccessConfig.model_validate(
        {"type": "face_access", "name": "g", "cameras": ["c"], "gate": {"device": "d"},
         "secret": "a-long-gateway-secret-for-tests"}
    )  # fmt: skip
    assert cfg.liveness == "challenge_always"
    s = challenge_settings(cfg)
    assert (s.steps, s.step_s, s.answer_s, s.actions) == (2, 4.0, 1.5, ACTIONS)
