"""App ``face_access``: recognise residents at a gate, open the relay, report the decision.

Per frame of a watched camera (motion-gated by the camera source, and skipped while the app is
busy — its frames channel drops newest): detect → quality → align → passive liveness → embed →
1:N match, all in the app's own worker thread. Then, on the event loop:

- no face, or a face that fails the quality checks: nothing is decided (the gate screen asks the
  person to face the camera);
- a match within ``threshold`` under the ``liveness`` policy (:meth:`FaceAccessApp.decide`):
  ``off``/``record`` grant on the match; ``passive`` refuses a passive score under
  ``passive_limit``; ``challenge_on_doubt`` challenges such a face, ``challenge_always`` every
  face (both refuse outright under ``refuse_below``). A challenge (:mod:`.liveness`) takes the
  following frames of the same tracked face: the screen shows each random action
  (``{"state": "challenge", "action", "seconds_left", "step", "steps"}``), and the attempt ends
  passed or failed (wrong action, too early, timeout, face lost, flat, another person at the
  end); no frame for ``step_s`` ends it too. Other faces wait meanwhile;
- live and matched: **granted** — the relay is set through the spine's actuator path (the
  Modbus source writes and reads back), and cleared ``gate.open_s`` later. One opening per
  decision: while a gate cycle runs, another decision does not set the relay again (``relay:
  busy``), and a person decided about is ignored for ``cooldown_s`` (tailgating guard);
- otherwise **denied**: unknown face (reported at most every ``unknown_interval_s``) or not live.

Face is not the only way in: a visitor pass (a signed QR code, :mod:`protocols.visitor_pass`)
shown to the same camera, and cards and PINs from the readers the app follows
(``readers.names``; sources of type ``card_reader``). Each is an :class:`Attempt` and goes the
same way: the gate, then the report.

The gate: "granted" only when the relay's write was read back as set (the actuator path returns
the value the device holds). A write that fails (no reply, CE311/CE312) or reads back otherwise
makes the attempt ``denied`` with ``relay: failed``, and the screen says to use the intercom.

Every attempt becomes an ``access`` envelope with its ``method`` (person id, visit id or
"unknown", distance and liveness for a face, the refusal of a pass, the reader of a card —
never an image, a template, a card number, a PIN or a pass's text), an audit-log entry, and a
message to the gate screen shown for ``screen.show_s`` (the name masked per ``screen.names``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

import cv2
from prometheus_client import CollectorRegistry, Gauge

from edge.errors import EdgeError
from edge.face_access.config import HOUR_S, FaceAccessConfig
from edge.face_access.gallery import Gallery
from edge.face_access.liveness.challenge import ChallengeSettings
from edge.face_access.liveness.runner import ChallengeRun
from edge.face_access.passes import PassLedger, PassScanner
from edge.face_access.pipeline import FaceAnalysis
from edge.face_access.service import FaceService
from edge.face_access.web import ScreenFeed, face_routes, mask_name
from edge.plugin import AppContext, Plugin, ServesRoutes
from edge.readings import Credential
from edge.vision.face_detector import FaceBox
from edge.vision.frames import Frame
from edge.vision.session import limit_blas_threads
from protocols import envelope as env
from protocols import visitor_pass
from protocols.signed import public_key_from_raw, unb64url

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
STORE_POLL_S = 1.0
Relay = Literal["opened", "not_opened", "busy", "failed"]


@dataclass(frozen=True)
class Decision:
    granted: bool
    person: str  # id or "unknown"
    score: float | None
    reason: str
    liveness: env.LivenessCheck
    challenge: bool = False  # not decided yet: the face must answer a challenge first


def challenge_settings(config: FaceAccessConfig) -> ChallengeSettings:
    c = config.challenge
    return ChallengeSettings(
        actions=tuple(c.actions),
        steps=c.steps,
        step_s=c.step_s,
        min_reaction_s=c.min_reaction_s,
        answer_s=c.answer_s,
        turn_deg=c.turn_deg,
        planarity_limit=c.planarity_limit,
    )


@dataclass
class ChallengeAttempt:
    """A challenge that runs: the models' side, the latest frame, what was decided before it."""

    run: ChallengeRun
    frame: Frame
    check: env.LivenessCheck
    score: float | None
    shown_left: int = -1  # the seconds_left last put on the screen


@dataclass(frozen=True)
class Attempt:
    """One request to pass, whichever way it came: what the gate, the access event, the audit
    log and the screen are told."""

    method: env.AccessMethod
    allowed: bool  # before the relay: the face matched, the pass and the card are good
    person: str  # enrolled id, a pass's visit id, or "unknown"
    reason: str
    time: float  # Unix seconds when it was seen
    mono: float  # monotonic seconds when it was captured (latency)
    camera: str | None = None
    reader: str | None = None
    score: float | None = None
    liveness: env.LivenessCheck | None = None
    refusal: str | None = None  # a stable word (a pass's refusal, "unknown", "locked")
    pass_id: str | None = None
    pass_issuer: str | None = None
    uses_left: int | None = None
    screen: dict[str, Any] = field(default_factory=dict)  # more for the screen's message


class FaceAccessMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.enrolled = Gauge(
            "cityedge_faces_enrolled",
            "People in a face store: current, or stale (enrolled with another model)",
            ["app", "status"],
            registry=registry,
        )


class FaceAccessApp(Plugin, ServesRoutes):
    def __init__(self, config: FaceAccessConfig, ctx: AppContext) -> None:
        self.config = config
        self.ctx = ctx
        self.name = config.name
        self.service = FaceService(config, ctx.site, ctx.gateway, ctx.check.base_dir)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"face-{config.name}")
        self.gallery = Gallery.empty()
        self.names: dict[str, str] = {}
        self.model_versions: dict[str, str] = {}
        self.ready = asyncio.Event()
        self.screen = ScreenFeed()
        self.routes = face_routes(self)
        self.enrolled_gauge = ctx.metrics.own(FaceAccessMetrics).enrolled
        self._last: dict[str, float] = {}  # person or "unknown" -> monotonic time of last decision
        p = config.passes
        self.pass_keys = {kid: public_key_from_raw(unb64url(raw)) for kid, raw in p.keys.items()}
        self.ledger = (
            PassLedger(config.store_path(ctx.check.base_dir) / p.ledger) if p.keys else None
        )
        self._scanner: PassScanner | None = None  # made in the worker thread that uses it
        self._pass_quiet: dict[str, float] = {}  # pass text digest -> monotonic end of quiet
        self._reader_failures: dict[str, list[float]] = {}  # reader -> monotonic times
        self._reader_locked: dict[str, float] = {}  # reader -> monotonic end of the lockout
        self._gate_task: asyncio.Task[None] | None = None
        self._store_version = -1
        self.challenge: ChallengeAttempt | None = None  # the challenge that runs, if one does
        self.rng = random.SystemRandom()  # the challenge must not be predictable
        self.door_closed: bool | None = None
        self.decisions = 0
        self._latency_ms = 0.0  # from capture to the relay command, of the last opening
        self._relay_error = ""
        self.frames_seen = 0

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (models, the store) in the app's one worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    # -- lifecycle ---------------------------------------------------------------------------
    def _load_models(self) -> dict[str, str]:
        limit_blas_threads(1)
        pipeline = self.service.pipeline  # loads, checks checksums and warms every model
        return pipeline.model_versions

    def _load_gallery(self) -> tuple[Gallery, dict[str, str], int, int]:
        version = self.service.store.data_version()
        gallery, names, stale = self.service.store.load(self.service.embedding_model)
        if stale:
            log.warning(
                "face store: %d people were enrolled with another embedding model and are NOT "
                "recognised until re-enrolled (%s); run 'cityedge faces reenroll' (uses retained "
                "images) or enrol them again",
                len(stale),
                ", ".join(sorted({p.model for p in stale})),
            )
        return gallery, names, len(stale), version

    async def reload(self) -> None:
        self.gallery, self.names, stale, self._store_version = await self.call(self._load_gallery)
        self.enrolled_gauge.labels(self.name, "current").set(len(self.names))
        self.enrolled_gauge.labels(self.name, "stale").set(stale)

    async def run(self) -> None:
        try:
            self.model_versions = await self.call(self._load_models)
            await self.reload()
            log.info(
                "face access %s: models %s; %d people enrolled",
                self.name,
                ", ".join(self.model_versions.values()),
                len(self.names),
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                helpers = [
                    tg.create_task(self._drain_inbox()),
                    tg.create_task(self._watch_store()),
                    tg.create_task(self._process_credentials()),
                    tg.create_task(self._expire_challenges()),
                ]
                await self._process_frames()
                for h in helpers:
                    h.cancel()
                if self._gate_task is not None:
                    await self._gate_task
        finally:
            self.screen.close()
            await asyncio.to_thread(self.executor.shutdown, wait=True)
            if self.ledger is not None:
                self.ledger.close()

    async def _drain_inbox(self) -> None:
        """Readings reach every app; this one only follows the gate's door contact."""
        async for batch in self.ctx.inbox:
            if batch.device == self.config.gate.device:
                door = batch.value_of("door_closed")
                if door is not None:
                    self.door_closed = bool(door.value)

    async def _watch_store(self) -> None:
        """Pick up enrolments and erasures by the CLI; erase expired retained images."""
        clock = self.ctx.clock
        while True:
            await clock.sleep(STORE_POLL_S)
            if await self.call(self.service.store.data_version) != self._store_version:
                await self.reload()
            purged = await self.call(self.service.purge_images, clock.time())
            if purged:
                log.info(
                    "face access %s: erased %d expired enrolment images", self.name, len(purged)
                )

    # -- frames ------------------------------------------------------------------------------
    def _analyse(self, frame: Frame) -> FaceAnalysis:
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        return self.service.pipeline.analyse(rgb, liveness=self.config.liveness != "off")

    def _scan_pass(self, frame: Frame) -> str | None:
        if self._scanner is None:
            self._scanner = PassScanner()
        return self._scanner.scan(frame.image)

    async def _process_frames(self) -> None:
        async for frame in self.ctx.frames:
            text = await self.call(self._scan_pass, frame) if self.ledger is not None else None
            if text is not None:  # a pass held up to the camera: it decides, not the face
                await self.handle_pass(frame, text)
                self.frames_seen += 1
                continue
            try:
                if self.challenge is not None:
                    await self._challenge_frame(self.challenge, frame)
                else:
                    analysis = await self.call(self._analyse, frame)
                    await self.handle(frame, analysis)
            except (ValueError, cv2.error) as err:
                log.warning("camera %s frame %d: cannot analyse: %s", frame.camera, frame.seq, err)
            self.frames_seen += 1

    def decide(self, analysis: FaceAnalysis, gallery: Gallery) -> Decision | None:
        """The decision on one analysed frame; ``challenge=True`` when the policy wants the
        face to answer a challenge first."""
        if analysis.embedding is None:
            return None
        c = self.config
        match = gallery.search(analysis.embedding)
        matched = match is not None and match.distance <= c.threshold
        score = match.distance if match is not None else None
        p = analysis.passive
        passive = (
            None
            if p is None
            else env.PassiveLiveness(
                antispoof=round(p.antispoof, 4),
                liveness=round(p.liveness, 4),
                score=round(p.score, 4),
                limit=c.passive_limit,
            )
        )
        doubt = p is None or p.score < c.passive_limit  # no score: no reason to trust it
        live = None if p is None or c.liveness in ("off", "record") else not doubt
        check = env.LivenessCheck(policy=c.liveness, live=live, passive=passive, challenge=None)
        person = match.person if matched and match is not None else "unknown"
        if not matched:
            return Decision(False, "unknown", score, "unknown face", check)
        if c.liveness in ("off", "record"):
            return Decision(True, person, score, "matched", check)
        if c.liveness == "passive":
            if p is None:  # never open on a check that did not run
                why = "not live: the passive liveness models did not run"
                return Decision(False, person, score, why, check.model_copy(update={"live": False}))
            if doubt:
                why = f"not live: passive score {p.score:.2f} < {c.passive_limit:g}"
                return Decision(False, person, score, why, check)
            return Decision(True, person, score, "matched", check)
        if p is not None and p.score < c.refuse_below:
            why = f"not live: passive score {p.score:.2f} < {c.refuse_below:g} (refuse_below)"
            return Decision(False, person, score, why, check.model_copy(update={"live": False}))
        if c.liveness == "challenge_always" or doubt:
            pending = check.model_copy(update={"live": None})
            return Decision(False, person, score, "challenge", pending, challenge=True)
        return Decision(True, person, score, "matched", check)

    async def handle(self, frame: Frame, analysis: FaceAnalysis) -> Decision | None:
        if analysis.face is None:
            return None
        if analysis.quality is not None and not analysis.quality.ok:
            self.screen.publish({"state": "adjust", "problems": list(analysis.quality.problems)})
            return None
        decision = self.decide(analysis, self.gallery)
        if decision is None:
            return None
        now = time.monotonic()
        key = decision.person
        quiet = self.config.unknown_interval_s if key == "unknown" else self.config.cooldown_s
        if now - self._last.get(key, -float("inf")) < quiet:
            return None
        if decision.challenge:
            assert analysis.face is not None
            self._start_challenge(frame, analysis.face, decision)
            return decision
        await self._admit_face(frame, decision)
        return decision

    async def _admit_face(self, frame: Frame, decision: Decision) -> None:
        """A face decided (at once, or after its challenge): the gate, the report, and the
        person's cooldown."""
        self._last[decision.person] = time.monotonic()
        state = "spoof" if decision.person != "unknown" else "unknown"
        await self.admit(
            Attempt(
                method="face",
                allowed=decision.granted,
                person=decision.person,
                reason=decision.reason,
                time=frame.time,
                mono=frame.captured_mono,
                camera=frame.camera,
                score=decision.score,
                liveness=decision.liveness,
                screen={"state": "granted" if decision.granted else state},
            )
        )

    # -- the active challenge ----------------------------------------------------------------
    def _start_challenge(self, frame: Frame, face: FaceBox, d: Decision) -> None:
        run = ChallengeRun.start(
            challenge_settings(self.config),
            self.rng,
            face,
            d.person,
            self.gallery.templates_of(d.person),
            self.config.threshold,
            frame.captured_mono,
        )
        self.challenge = ChallengeAttempt(run, frame, d.liveness, d.score)
        log.info(
            "gate %s: challenge for %s: %s",
            self.config.gate.device,
            d.person,
            ", ".join(run.challenge.actions),
        )

    def _show_challenge(self, attempt: ChallengeAttempt, now: float) -> None:
        """Prompt the next action when it is due, and count its seconds down on the screen."""
        c = attempt.run.challenge
        if c.want_prompt(now):
            c.prompted(now)
            attempt.shown_left = -1
        if c.phase != "prompted" or c.action is None:
            return
        left = math.ceil(c.seconds_left(now))
        if left != attempt.shown_left:  # each prompt, then once a second
            attempt.shown_left = left
            self.screen.publish(
                {
                    "state": "challenge",
                    "action": c.action,
                    "seconds_left": left,
                    "step": c.step + 1,
                    "steps": len(c.actions),
                }
            )

    async def _challenge_frame(self, attempt: ChallengeAttempt, frame: Frame) -> None:
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        pipeline = self.service.pipeline
        assert pipeline.liveness is not None
        attempt.frame = frame
        await self.call(attempt.run.step, pipeline.liveness, pipeline, rgb, frame.captured_mono)
        if attempt.run.challenge.done:
            await self._end_challenge(attempt, frame)
        else:  # on the frames' own timeline (the camera stamps them with time.monotonic)
            self._show_challenge(attempt, time.monotonic())

    async def _expire_challenges(self) -> None:
        """End an attempt whose face sent no frame for ``step_s`` (the camera skips still
        frames, or the face left): the screen must not keep asking."""
        while True:
            await self.ctx.clock.sleep(0.5)
            attempt = self.challenge
            if attempt is None:
                continue
            now = time.monotonic()  # the frames' timeline, as above
            if now - attempt.frame.captured_mono > self.config.challenge.step_s:
                attempt.run.challenge.fail("face_lost", "no frame of the face came", now)
                await self._end_challenge(attempt, attempt.frame)

    async def _end_challenge(self, attempt: ChallengeAttempt, frame: Frame) -> None:
        if self.challenge is not attempt:
            return
        self.challenge = None
        c = attempt.run.challenge
        passed = c.outcome == "passed"
        result = env.ChallengeResult(
            actions=list(c.actions),
            done=c.step,
            outcome=c.outcome,
            seconds=None if c.elapsed is None else round(max(c.elapsed, 0.0), 2),
            planarity=None if c.planarity is None else round(c.planarity, 4),
            planarity_limit=c.settings.planarity_limit,
        )
        liveness = attempt.check.model_copy(update={"live": passed, "challenge": result})
        reason = "matched" if passed else f"not live: challenge {c.outcome} ({c.detail})"
        person = attempt.run.person
        await self._admit_face(frame, Decision(passed, person, attempt.score, reason, liveness))

    # -- passes, cards, PINs -------------------------------------------------------------------
    async def handle_pass(self, frame: Frame, text: str) -> Attempt | None:
        """A pass's QR text read from ``frame``: checked, its use counted, then the gate."""
        c = self.config
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        now = time.monotonic()
        if now < self._pass_quiet.get(key, -float("inf")):
            return None  # the same code still held up: decided already
        self._pass_quiet = {k: t for k, t in self._pass_quiet.items() if t > now}
        self._pass_quiet[key] = now + c.cooldown_s
        head: visitor_pass.VisitorPass | None = None
        try:
            head = visitor_pass.parse(text)[0]
            p = visitor_pass.verify(
                text,
                keys=self.pass_keys,
                site=self.ctx.site,
                gate=c.pass_gate,
                now=self.ctx.clock.time(),
                max_validity_s=int(c.passes.max_validity_h * HOUR_S),
                skew_s=c.passes.skew_s,
            )
            assert self.ledger is not None
            left = await self.call(self.ledger.use, p, self.ctx.clock.time())
        except visitor_pass.PassRefused as err:
            trusted = err.reason not in (
                visitor_pass.PassRefusal.MALFORMED,
                visitor_pass.PassRefusal.UNKNOWN_KEY,
                visitor_pass.PassRefusal.FORGED,
            )
            attempt = Attempt(
                method="pass",
                allowed=False,
                person=head.subject if head is not None and trusted else "unknown",
                reason=f"pass refused: {err.reason.value}: {err.detail}",
                time=frame.time,
                mono=frame.captured_mono,
                camera=frame.camera,
                refusal=err.reason.value,
                pass_id=head.id_hex if head is not None else None,
                pass_issuer=head.kid if head is not None and trusted else None,
                screen={"state": "refused", "why": err.reason.value},
            )
        else:
            # the visitor may still hold the phone up while walking through: not a second use
            self._pass_quiet[key] = now + max(c.cooldown_s, c.passes.reuse_after_s)
            attempt = Attempt(
                method="pass",
                allowed=True,
                person=p.subject,
                reason=f"pass {p.id_hex} from {p.kid}: use {p.uses - left} of {p.uses}",
                time=frame.time,
                mono=frame.captured_mono,
                camera=frame.camera,
                pass_id=p.id_hex,
                pass_issuer=p.kid,
                uses_left=left,
                screen={"state": "granted", "visitor": not p.person},
            )
        await self.admit(attempt)
        return attempt

    async def _process_credentials(self) -> None:
        async for credential in self.ctx.credentials:
            await self.handle_credential(credential)

    async def handle_credential(self, cred: Credential) -> Attempt:
        """A card or PIN from a reader: its owner, or a failure counted against the reader
        (``readers.max_failures`` within ``lockout_s`` lock it for ``lockout_s``: a PIN cannot
        be guessed by trying)."""
        r = self.config.readers
        now = time.monotonic()
        method: env.AccessMethod = "card" if cred.kind == "card" else "pin"
        common: dict[str, Any] = {
            "method": method,
            "time": cred.time,
            "mono": cred.mono,
            "reader": cred.reader,
        }
        locked_until = self._reader_locked.get(cred.reader, 0.0)
        if now < locked_until:
            attempt = Attempt(
                allowed=False,
                person="unknown",
                reason=f"reader locked for {locked_until - now:.0f} s after wrong cards or PINs",
                refusal="locked",
                screen={"state": "refused", "why": "locked"},
                **common,
            )
            await self.admit(attempt)
            return attempt
        owner = await self.call(self.service.credential_owner, cred.kind, cred.value)
        if owner is None:
            fails = [t for t in self._reader_failures.get(cred.reader, []) if now - t < r.lockout_s]
            fails.append(now)
            self._reader_failures[cred.reader] = fails
            why = "unknown"
            if len(fails) >= r.max_failures:
                self._reader_locked[cred.reader] = now + r.lockout_s
                self._reader_failures[cred.reader] = []
                why = "locked"
                log.warning(
                    "reader %s: %d wrong cards or PINs; locked for %.0f s",
                    cred.reader,
                    len(fails),
                    r.lockout_s,
                )
            attempt = Attempt(
                allowed=False,
                person="unknown",
                reason=f"{cred.kind} not enrolled",
                refusal=why,
                screen={"state": "refused", "why": why},
                **common,
            )
        else:
            self._reader_failures.pop(cred.reader, None)
            attempt = Attempt(
                allowed=True,
                person=owner,
                reason=f"{cred.kind} enrolled",
                screen={"state": "granted"},
                **common,
            )
        await self.admit(attempt)
        return attempt

    # -- the gate and the report -----------------------------------------------------------------
    async def admit(self, attempt: Attempt) -> Relay:
        """Open the gate for an allowed attempt (one opening at a time), then report it."""
        relay: Relay = "not_opened"
        if attempt.allowed:
            if self._gate_task is not None and not self._gate_task.done():
                relay = "busy"
            else:
                relay = await self._open_gate(time.monotonic() - attempt.mono)
        await self._report(attempt, relay)
        return relay

    async def _open_gate(self, latency_s: float) -> Relay:
        g = self.config.gate
        self._latency_ms = latency_s * 1000
        try:
            back = await self.ctx.actuators.write(g.device, g.point, True)
        except EdgeError as err:
            log.error("gate %s: opening failed: %s", g.device, err.for_humans())
            self._relay_error = f"{err.code}: {err.message}"
            return "failed"
        if back is not True:
            log.error("gate %s: relay %s read back %r after writing true", g.device, g.point, back)
            self._relay_error = f"the relay read back {back!r}"
            return "failed"
        self._gate_task = asyncio.create_task(self._close_gate_later())
        return "opened"

    async def _close_gate_later(self) -> None:
        g = self.config.gate
        await self.ctx.clock.sleep(g.open_s)
        for attempt in range(3):  # a relay left open is worse than a retry
            try:
                await self.ctx.actuators.write(g.device, g.point, False)
                return
            except EdgeError as err:
                log.error(
                    "gate %s: closing failed (try %d): %s", g.device, attempt + 1, err.for_humans()
                )
                await self.ctx.clock.sleep(0.5)

    def _screen_message(self, a: Attempt, relay: Relay) -> dict[str, Any]:
        c = self.config.screen
        msg: dict[str, Any] = {"method": a.method, "show_s": c.show_s, **a.screen}
        if a.allowed and relay == "failed":
            msg["state"] = "intercom"  # allowed, but the gate did not confirm it opened
        if msg.get("state") == "granted":
            name = None if msg.get("visitor") else self.names.get(a.person)
            msg["name"] = None if name is None else mask_name(name, c.names)
        msg["decided_at_ms"] = round(self.ctx.clock.time() * 1000)
        msg["seen_at_ms"] = round(a.time * 1000)
        return msg

    async def _report(self, a: Attempt, relay: Relay) -> None:
        self.decisions += 1
        granted = a.allowed and relay in ("opened", "busy")
        reason = a.reason
        if a.allowed and relay == "failed":
            reason = f"{a.reason}; the gate did not open ({self._relay_error}): use the intercom"
        latency_ms = self._latency_ms if relay == "opened" else (time.monotonic() - a.mono) * 1000
        payload = env.AccessPayload(
            decision=env.AccessDecision.GRANTED if granted else env.AccessDecision.DENIED,
            method=a.method,
            person=a.person,
            score=None if a.score is None else round(a.score, 4),
            threshold=self.config.threshold if a.method == "face" else None,
            reason=reason[:300],
            refusal=a.refusal,
            liveness=a.liveness,
            latency_ms=round(max(latency_ms, 0.0), 2),
            camera=a.camera,
            reader=a.reader,
            pass_id=a.pass_id,
            pass_issuer=a.pass_issuer,
            uses_left=a.uses_left,
            relay=relay,
            models=self.model_versions if a.method == "face" else {},
        )
        log.info(
            "gate %s: %s %s by %s (%s; relay %s, %.0f ms)",
            self.config.gate.device,
            payload.decision.value,
            a.person,
            a.method,
            reason,
            relay,
            latency_ms,
        )
        self.screen.publish(self._screen_message(a, relay))
        emitter = self.ctx.emitter
        await emitter.send(emitter.access(self.config.gate.device, a.time, payload))
        detail: dict[str, Any] = {
            "decision": payload.decision.value,
            "method": a.method,
            "score": payload.score,
            "live": None if a.liveness is None else a.liveness.live,
            "relay": relay,
            "camera": a.camera,
            "reader": a.reader,
            "refusal": a.refusal,
            "pass": a.pass_id,
        }
        await self.call(
            self.service.audit.append, "decision", a.person, detail, self.ctx.clock.time()
        )
