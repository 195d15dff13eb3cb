"""The active challenge: a random sequence of blinks and head turns, answered in time.

A pure state machine (no models, no clock of its own): the caller feeds one
:class:`Observation` per camera frame of the tracked face — when it was captured, the head
turn, how open the eyes are, the rigid landmarks — and tells it when each prompt reached the
screen. Per step:

1. **neutral**: the face must be frontal (head turn within ``neutral_deg``, and half of
   ``turn_deg``, of its resting turn: the median over the frames before the first prompt, then
   also over the frontal frames between steps) with the eyes open; then,
   after a random pause (``pause_s``, so a recording cannot know when the prompt comes), the
   step's action is prompted (:attr:`Challenge.want_prompt`, on a frontal frame only);
2. **prompted**: the answer must begin at least ``min_reaction_s`` after the prompt (no person
   reacts faster; a replay that happens to move at that moment does) and at most ``answer_s``
   after it (a person who read the prompt reacts within a second or so; a recording whose
   gesture merely falls somewhere in the step does not), and finish within ``step_s``. A turn
   begins when the head is half-way (``turn_deg / 2``) the asked way, and a quarter turn past
   where it was at the prompt, and counts at
   ``turn_deg``; a blink begins when both eyes close below ``closed_ratio`` of their open size
   and counts when they open again. The other action fails the step (a recording that shows
   every action in turn does not pass by waiting): a turn the wrong way, or a turn while a
   blink was asked. Blinks during a turn are natural and ignored, and so is a blink that
   started before the reaction time;
3. after the last step the face must come back towards frontal (within ``turn_deg / 2``) with
   the eyes open, within ``step_s``: the caller checks on that frame that the same person
   finished (the embedding again), and the challenge checks that the head was not flat: over
   the frames turned at least ``0.75 * turn_deg``, the landmarks must show ``planarity_limit``
   of parallax that no homography explains
   (:func:`~edge.face_access.liveness.mesh.planar_residual`; no measurable residual counts as
   none). A blink-only challenge has no turn and no planarity figure.

A frame whose numbers are not finite (a landmarker that lost the face) is skipped.

Outcomes (:data:`Outcome`): ``passed``; ``timeout`` (no answer in time), ``wrong_action``,
``too_early`` (a turn that began before a person could have seen the prompt), ``face_lost``
(the tracked face left, set by the caller), ``flat`` (the turns had no parallax: a photo or a
screen turned), ``other_person`` (the embedding at the end, set by the caller).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.face_access.liveness.mesh import planar_residual

Action = Literal["blink", "turn_left", "turn_right"]
ACTIONS: tuple[Action, ...] = ("blink", "turn_left", "turn_right")
Outcome = Literal[
    "running", "passed", "timeout", "wrong_action", "too_early", "face_lost", "flat", "other_person"
]
Phase = Literal["neutral", "prompted", "final", "done"]


@dataclass(frozen=True)
class ChallengeSettings:
    actions: tuple[Action, ...] = ACTIONS
    steps: int = 2
    step_s: float = 4.0
    min_reaction_s: float = 0.15
    answer_s: float = 1.5
    pause_s: tuple[float, float] = (0.1, 0.4)
    turn_deg: float = 15.0
    neutral_deg: float = 8.0
    closed_ratio: float = 0.6
    open_ratio: float = 0.8
    planarity_limit: float = 0.02


@dataclass(frozen=True)
class Observation:
    """One frame of the tracked face."""

    t: float  # capture time (monotonic seconds)
    yaw_deg: float  # positive: the nose to the image's right (the subject's left)
    openness: float  # mean of both eyes (lid gap over eye width)
    rigid: np.ndarray  # N x 2 landmarks that move with the skull
    scale: float  # eye distance in pixels

    @property
    def usable(self) -> bool:
        """Finite numbers throughout (a landmarker that lost the face gives NaN)."""
        numbers = (self.t, self.yaw_deg, self.openness, self.scale)
        return all(math.isfinite(v) for v in numbers) and bool(np.isfinite(self.rigid).all())


@dataclass
class Challenge:
    """One attempt: ``actions`` in order, each prompted, answered and checked."""

    actions: tuple[Action, ...]
    settings: ChallengeSettings
    rng: random.Random
    started: float
    step: int = 0
    phase: Phase = "neutral"
    outcome: Outcome = "running"
    detail: str = ""
    prompt_due: float | None = None  # when the next prompt should be shown (after the pause)
    prompted_at: float | None = None
    step_done_at: float | None = None  # when the last step was answered
    finished_at: float | None = None
    planarity: float | None = None
    _neutral_yaw: list[float] = field(default_factory=list)
    _open: list[float] = field(default_factory=list)
    _reference: Observation | None = None
    _turned: list[Observation] = field(default_factory=list)
    _closed_at: float | None = None  # when the eyes closed (during a blink step)
    _begun_at: float | None = None  # when the asked turn passed half-way (during a turn step)
    _ready: bool = False  # the last frame was frontal with the eyes open (a prompt may come)
    _last_rel: float = 0.0  # the head turn of the last frame, from the resting turn
    _prompt_rel: float = 0.0  # ... when the current prompt was shown

    @classmethod
    def random(cls, settings: ChallengeSettings, rng: random.Random, started: float) -> Challenge:
        """A challenge of ``settings.steps`` actions drawn independently (repeats allowed: with
        three actions, two steps give 9 sequences, three give 27)."""
        actions = tuple(rng.choice(settings.actions) for _ in range(settings.steps))
        return cls(actions, settings, rng, started)

    # -- what the caller reads ----------------------------------------------------------------
    @property
    def action(self) -> Action | None:
        return self.actions[self.step] if self.step < len(self.actions) else None

    @property
    def done(self) -> bool:
        return self.outcome != "running"

    def want_prompt(self, now: float) -> bool:
        """Whether the caller should show the current step's prompt now."""
        due = self.prompt_due is not None and now >= self.prompt_due
        return self.phase == "neutral" and due and self._ready

    def seconds_left(self, now: float) -> float:
        """Of the current step (or of the return to neutral before or after it)."""
        since = self.prompted_at if self.phase == "prompted" else self.step_done_at
        return max(0.0, self.settings.step_s - (now - (since or self.started)))

    @property
    def resting_yaw(self) -> float:
        return float(np.median(self._neutral_yaw)) if self._neutral_yaw else 0.0

    @property
    def open_size(self) -> float:
        return float(np.median(self._open)) if self._open else 0.0

    # -- what the caller tells it -------------------------------------------------------------
    def prompted(self, at: float) -> None:
        """The current step's prompt reached the screen at ``at``."""
        if self.phase != "neutral":
            raise RuntimeError(f"prompted in phase {self.phase}")
        self.phase = "prompted"
        self.prompted_at = at
        self.prompt_due = None
        self._closed_at = None
        self._begun_at = None
        self._prompt_rel = self._last_rel

    def fail(self, outcome: Outcome, detail: str, at: float) -> None:
        if not self.done:
            self.outcome, self.detail, self.phase, self.finished_at = outcome, detail, "done", at

    def overrule(self, outcome: Outcome, detail: str) -> None:
        """Turn a passed challenge into a failure the caller found (``other_person``)."""
        self.outcome, self.detail, self.phase = outcome, detail, "done"

    def observe(self, obs: Observation) -> Outcome:
        """Take one frame; returns the outcome so far (``running`` until decided)."""
        if self.done:
            return self.outcome
        if not obs.usable:  # skipped like a frame without the face (the caller times it out)
            return self.outcome
        s = self.settings
        if self._reference is None:  # the frame the face was recognised on: its resting pose
            self._reference = obs
            self._neutral_yaw.append(obs.yaw_deg)
            self._open.append(obs.openness)
        elif self.step == 0 and self.phase == "neutral":
            # before the first prompt every frame is the resting pose (its median: one frame
            # caught mid-sway does not fix it; a person who stands turned is frontal turned)
            self._neutral_yaw.append(obs.yaw_deg)
        rel = obs.yaw_deg - self.resting_yaw
        if self.phase == "neutral":
            # a prompt finds the head well short of where a turn "begins" (turn_deg / 2)
            self._neutral(obs, rel, abs(rel) <= min(s.neutral_deg, s.turn_deg / 2))
        elif self.phase == "prompted":
            self._prompted(obs, rel)
        elif self.phase == "final":  # at the end, half-way back from a turn is frontal enough
            self._final(obs, abs(rel) <= s.turn_deg / 2)
        self._last_rel = rel
        if abs(rel) >= 0.75 * s.turn_deg:
            self._turned.append(obs)
        return self.outcome

    # -- phases -------------------------------------------------------------------------------
    def _neutral(self, obs: Observation, rel: float, frontal: bool) -> None:
        s = self.settings
        opened = not self._open or obs.openness >= s.open_ratio * self.open_size
        self._ready = frontal and opened
        if frontal and opened:
            if self.step > 0:  # (step 0 took every frame already)
                self._neutral_yaw.append(obs.yaw_deg)
            self._open.append(obs.openness)
            if self.prompt_due is None:
                self.prompt_due = obs.t + self.rng.uniform(*s.pause_s)
        if obs.t - (self.step_done_at or self.started) > s.step_s:
            self.fail("timeout", "the face did not come back to frontal", obs.t)

    def _prompted(self, obs: Observation, rel: float) -> None:
        s = self.settings
        assert self.prompted_at is not None
        action = self.action
        since = obs.t - self.prompted_at
        if since > s.step_s:
            self.fail("timeout", f"no {action} within {s.step_s:g} s", obs.t)
            return
        turned_left, turned_right = rel >= s.turn_deg, rel <= -s.turn_deg
        if action == "blink":
            if turned_left or turned_right:
                self.fail("wrong_action", "turned the head when a blink was asked", obs.t)
                return
            if obs.openness < s.closed_ratio * self.open_size:
                if self._closed_at is None:
                    self._closed_at = obs.t
            elif self._closed_at is not None and obs.openness >= s.open_ratio * self.open_size:
                # a blink that began before a person could react is not the answer
                if self._closed_at >= self.prompted_at + s.min_reaction_s:
                    self._next(obs.t)
                    return
                self._closed_at = None
            if self._closed_at is None and since > s.answer_s:
                self.fail("timeout", f"no blink began within {s.answer_s:g} s", obs.t)
            return
        sign = 1.0 if action == "turn_left" else -1.0
        wanted, other = (turned_left, turned_right) if sign > 0 else (turned_right, turned_left)
        if other:
            self.fail("wrong_action", f"turned the other way when {action} was asked", obs.t)
            return
        # begun: half-way, and a quarter turn past where the head was at the prompt (a head
        # still coming back from the last turn is not already answering)
        if self._begun_at is None and sign * rel >= max(
            s.turn_deg / 2, sign * self._prompt_rel + s.turn_deg / 4
        ):
            self._begun_at = obs.t
        if self._begun_at is not None and self._begun_at < self.prompted_at + s.min_reaction_s:
            self.fail("too_early", "the turn began before the prompt could be seen", obs.t)
        elif wanted:
            self._next(obs.t)
        elif self._begun_at is None and since > s.answer_s:
            self.fail("timeout", f"no {action} began within {s.answer_s:g} s", obs.t)

    def _next(self, t: float) -> None:
        self.step += 1
        self.step_done_at = t
        self.prompted_at = None
        self.phase = "final" if self.step >= len(self.actions) else "neutral"

    def _final(self, obs: Observation, frontal: bool) -> None:
        s = self.settings
        assert self.step_done_at is not None
        if frontal and obs.openness >= s.open_ratio * self.open_size:
            self.planarity = self._parallax()
            if self.planarity is not None and self.planarity < s.planarity_limit:
                self.fail(
                    "flat",
                    f"the head turned without parallax ({self.planarity:.3f} < "
                    f"{s.planarity_limit:g}): a photo or a screen",
                    obs.t,
                )
                return
            self.outcome, self.phase, self.finished_at = "passed", "done", obs.t
        elif obs.t - self.step_done_at > s.step_s:
            self.fail("timeout", "the face did not come back to frontal", obs.t)

    def _parallax(self) -> float | None:
        """The largest residual of a homography between the first frame and a turned one."""
        if not any(a != "blink" for a in self.actions) or self._reference is None:
            return None
        ref = self._reference
        residuals = []
        for o in self._turned:
            if o.t <= ref.t or o.rigid.shape != ref.rigid.shape:
                continue
            r = planar_residual(ref.rigid, o.rigid, ref.scale)
            if math.isfinite(r):
                residuals.append(r)
        return max(residuals, default=0.0)  # no measurable turn: no evidence of a head

    @property
    def elapsed(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started

    def summary(self) -> dict[str, object]:
        return {
            "actions": list(self.actions),
            "done": self.step,
            "outcome": self.outcome,
            "detail": self.detail,
            "seconds": None if self.elapsed is None else round(self.elapsed, 2),
            "planarity": None if self.planarity is None else round(self.planarity, 4),
        }


def sequences(actions: Sequence[Action], steps: int) -> int:
    """How many different challenges there are: a guess passes with 1 in this many."""
    return int(len(set(actions)) ** steps)
