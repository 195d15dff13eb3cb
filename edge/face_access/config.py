"""Configuration of the ``face_access`` app (pydantic only)."""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Catalog, Loc, PluginConfig, StrictModel
from edge.config.problems import did_you_mean
from edge.config.tokens import TOKEN_MIN_LENGTH, BearerToken, Passphrase
from protocols import ed25519
from protocols.envelope import Ident
from protocols.signed import unb64url

HOUR_S = 3600


class GateConfig(StrictModel):
    device: Ident = Field(description="Device whose relay opens the gate (e.g. a gate-controller)")
    point: Ident = Field(default="relay", description="Writable boolean point: true = open")
    open_s: float = Field(
        default=3.0, gt=0, le=120, description="How long the relay stays set, then it is cleared"
    )


class QualityConfig(StrictModel):
    min_face_px: int = Field(default=60, ge=20, le=2000, description="Smallest face side to match")
    min_sharpness: float = Field(
        default=15.0, ge=0, description="Smallest Laplacian variance of the aligned face"
    )
    max_yaw_deg: float = Field(default=30.0, gt=0, le=90, description="Largest estimated head turn")
    max_roll_deg: float = Field(default=25.0, gt=0, le=90, description="Largest head tilt")


class ScreenConfig(StrictModel):
    """The gate terminal: who may watch its events stream, and what it shows."""

    tokens: dict[Ident, BearerToken] = Field(
        default_factory=dict,
        description="Screen name -> token of that screen: the events stream answers 401 "
        "without one of these (open the screen as /faces/<app>/screen#token=<token>); "
        f"at least {TOKEN_MIN_LENGTH} random characters each, checked like admin_token",
    )
    loopback: bool = Field(
        default=True,
        description="A browser on the gateway itself (127.0.0.1, ::1) needs no token; false "
        "when a reverse proxy on this machine forwards other people's requests",
    )
    show_s: float = Field(
        default=4.0, ge=1, le=30, description="How long a decision stays on the screen"
    )
    names: Literal["masked", "full", "none"] = Field(
        default="masked",
        description="The name shown for a granted person: masked keeps the first character "
        "and, from 3 characters on, the last of each word (张伟 -> 张*, 张小伟 -> 张*伟, "
        "Obama -> O***a); full shows it whole; none shows no name",
    )


def key_map_problem(keys: dict[str, str]) -> str | None:
    """Why a map of key id -> raw Ed25519 public key (base64url) cannot be trusted, or None."""
    for kid, text in keys.items():
        try:
            raw = unb64url(text)
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            return f"key {kid!r}: expected 32 bytes in base64url (the raw Ed25519 public key)"
        problem = ed25519.key_problem(raw)
        if problem is not None:
            return f"key {kid!r} is refused: {problem}; {ed25519.RULE}"
    return None


class PassesConfig(StrictModel):
    """Visitor passes: Ed25519-signed QR codes shown to the gate camera (see
    :mod:`protocols.visitor_pass`)."""

    keys: dict[Ident, str] = Field(
        default_factory=dict,
        description="Issuer key id -> raw Ed25519 public key (32 bytes, base64url, as "
        "'cityedge command-key' prints it); weak keys are refused; no keys: no pass opens",
    )
    gate: Ident | None = Field(
        default=None,
        description="The gate id passes must name (default: gate.device); a pass for another "
        "gate or site is refused",
    )
    max_validity_h: float = Field(
        default=72,
        gt=0,
        le=31 * 24,
        description="Refuse passes whose window is longer than this (a leaked long pass is a "
        "standing key)",
    )
    skew_s: int = Field(
        default=60, ge=0, le=900, description="Accept a pass this early (clocks differ)"
    )
    reuse_after_s: float = Field(
        default=30,
        ge=0,
        le=600,
        description="A pass that opened the gate is not counted again for this long (the "
        "visitor still holding it up while walking through)",
    )
    ledger: Path = Field(
        default=Path("passes.db"),
        description="Use counter of passes (relative to store_dir); kept across restarts",
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        problem = key_map_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class ReadersConfig(StrictModel):
    """Card and PIN readers (sources of type card_reader) whose credentials open this gate."""

    names: list[Ident] = Field(
        default_factory=list, description="Readers (card_reader source names) to follow"
    )
    pin_min_digits: int = Field(
        default=6, ge=4, le=12, description="Shortest PIN accepted at enrolment"
    )
    max_failures: int = Field(
        default=5, ge=1, le=100, description="Wrong cards or PINs before a reader is locked"
    )
    lockout_s: float = Field(
        default=300, ge=1, le=86_400, description="How long a reader stays locked"
    )


LivenessPolicy = Literal["off", "record", "passive", "challenge_on_doubt", "challenge_always"]
ChallengeAction = Literal["blink", "turn_left", "turn_right"]
_ENFORCE_GONE = (
    "'enforce' is no longer a policy: write 'passive' for what it did (the liveness models alone "
    "refuse what they call a spoof), or 'challenge_always' / 'challenge_on_doubt' to ask for a "
    "random blink or head turn as well (see models/cards/human-liveness.md)"
)
_LIMIT_GONE = (
    "liveness_limit belonged to the FaceAntiSpoofing model (lower was live), which the gate no "
    "longer runs: remove it; the passive models' score is higher-is-live, set passive_limit "
    "(0-1) instead if you must (see models/cards/human-liveness.md)"
)


class ChallengeConfig(StrictModel):
    """The active challenge: a random sequence of blinks and head turns (see
    edge/face_access/liveness/challenge.py for the rules)."""

    actions: list[ChallengeAction] = Field(
        default=["blink", "turn_left", "turn_right"],
        min_length=1,
        description="Actions a challenge draws from ('turn_left': the person's own left)",
    )
    steps: int = Field(
        default=2,
        ge=1,
        le=4,
        description="Actions per challenge, drawn independently: a replayed recording guesses "
        "right 1 in (number of actions)^steps",
    )
    step_s: float = Field(
        default=4.0,
        gt=0.5,
        le=30,
        description="Time to answer one prompt (and to face the camera again between steps)",
    )
    min_reaction_s: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="An answer that starts sooner after the prompt is not a person's",
    )
    answer_s: float = Field(
        default=1.5,
        gt=0,
        le=10,
        description="An answer must begin this soon after the prompt (a head half-way turned, "
        "the eyes closed): a person who read it reacts within a second or so, a recording "
        "whose gesture merely falls somewhere in the step does not",
    )
    turn_deg: float = Field(default=15.0, ge=5, le=60, description="Head turn that counts")
    planarity_limit: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Smallest parallax of a head turn (landmark residual of the best plane, "
        "over the eye distance) that is not a photo or a screen; 0: not checked",
    )

    @field_validator("actions")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each action once")
        return v

    @model_validator(mode="after")
    def _answer_within_step(self) -> ChallengeConfig:
        if self.answer_s > self.step_s:
            raise ValueError(
                f"answer_s ({self.answer_s:g}) is longer than step_s ({self.step_s:g}): an answer "
                "must begin within the step; raise step_s or lower answer_s"
            )
        if self.min_reaction_s >= self.answer_s:
            raise ValueError(
                f"min_reaction_s ({self.min_reaction_s:g}) leaves no time to answer before "
                f"answer_s ({self.answer_s:g}): lower it"
            )
        return self


class FaceAccessConfig(PluginConfig):
    """Open a gate for enrolled residents recognised by a camera; report every decision."""

    type: Literal["face_access"] = Field(description="Plug-in type")
    cameras: list[Ident] = Field(min_length=1, description="Camera devices to watch")
    gate: GateConfig = Field(description="The relay that opens the gate")
    secret: Passphrase = Field(
        min_length=16,
        description="Gateway secret the store and audit keys derive from (use !secret); at "
        "least 16 characters, random, not a placeholder",
    )
    store_dir: Path = Field(
        default=Path("faces"),
        description="Folder of the encrypted templates and the audit log (relative to the site file)",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Built models folder (default: $CITYEDGE_MODELS_DIR or models/build)",
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        lt=2,
        description="Largest L2 distance accepted as the same person (see the model card)",
    )
    liveness: LivenessPolicy = Field(
        default="challenge_always",
        description="challenge_always: every recognised face answers a random challenge; "
        "challenge_on_doubt: only when the passive score is under passive_limit; passive: the "
        "liveness models alone refuse; record: the models only report; off: not run",
    )
    passive_limit: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Passive liveness score (mean of the two models, higher is live) under which "
        "a face is not live (passive) or is challenged (challenge_on_doubt)",
    )
    refuse_below: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Challenge policies: a passive score under this is refused without a "
        "challenge (0: never)",
    )
    challenge: ChallengeConfig = Field(
        default_factory=ChallengeConfig, description="The active challenge"
    )
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality checks")
    cooldown_s: float = Field(
        default=5.0, ge=0, description="After a decision about a person, ignore them this long"
    )
    unknown_interval_s: float = Field(
        default=10.0, ge=0, description="Report an unknown face at most this often"
    )
    threads: int = Field(default=1, ge=1, le=8, description="Inference threads per model")
    admin_token: BearerToken | None = Field(
        default=None,
        description=f"Bearer token for the enrolment page and API: at least {TOKEN_MIN_LENGTH} "
        "characters of A-Z a-z 0-9 - . _ ~ + /, random (e.g. 'openssl rand -hex 16'); empty, "
        "short and placeholder tokens are refused (none: HTTP enrolment is off)",
    )
    screen: ScreenConfig = Field(
        default_factory=ScreenConfig, description="The gate terminal screen and its stream"
    )
    passes: PassesConfig = Field(
        default_factory=PassesConfig, description="Visitor passes (signed QR codes)"
    )
    readers: ReadersConfig = Field(
        default_factory=ReadersConfig, description="Card and PIN readers"
    )
    max_image_retention_days: int = Field(
        default=30,
        ge=0,
        le=365,
        description="Longest an opted-in enrolment image may be kept (0: never kept)",
    )

    @field_validator("liveness", mode="before")
    @classmethod
    def _enforce_renamed(cls, v: Any) -> Any:
        if v == "enforce":
            raise ValueError(_ENFORCE_GONE)
        return v

    @model_validator(mode="before")
    @classmethod
    def _limit_removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "liveness_limit" in data:
            raise ValueError(_LIMIT_GONE)
        return data

    def wants_frames(self, camera: str) -> bool:
        return camera in self.cameras

    def wants_credentials(self, reader: str) -> bool:
        return reader in self.readers.names

    def pages(self) -> list[str]:
        return [f"/faces/{self.name}/screen", f"/faces/{self.name}/enroll"]

    @property
    def pass_gate(self) -> str:
        return self.passes.gate or self.gate.device

    def store_path(self, base_dir: Path) -> Path:
        return self.store_dir if self.store_dir.is_absolute() else base_dir / self.store_dir

    def check(self, catalog: Catalog) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        for i, cam in enumerate(self.cameras):
            if cam not in catalog.devices:
                problems.append(
                    (
                        ("cameras", i),
                        f"no source provides camera {cam!r}{did_you_mean(cam, catalog.devices)}",
                    )
                )
        for i, reader in enumerate(self.readers.names):
            if reader not in catalog.devices:
                problems.append(
                    (
                        ("readers", "names", i),
                        f"no source provides reader {reader!r}"
                        f"{did_you_mean(reader, catalog.devices)}",
                    )
                )
        points = catalog.devices.get(self.gate.device)
        if points is None:
            problems.append((("gate", "device"), catalog.no_device(self.gate.device)))
        elif self.gate.device not in catalog.incomplete:
            info = points.get(self.gate.point)
            if info is None:
                problems.append(
                    (
                        ("gate", "point"),
                        catalog.no_point(self.gate.device, self.gate.point),
                    )
                )
            elif not info.writable:
                problems.append(
                    (("gate", "point"), f"{self.gate.device}.{self.gate.point} is not writable")
                )
        return problems
