"""The registry of error codes: every code the code base uses is registered once, with one
meaning and one exit code, and docs/errors.md is generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge import errors as edge_errors
from edge.camera.source import CameraError
from edge.face_access.service import EnrollmentError
from edge.face_access.store import FaceStoreError
from edge.vision.manifest import ModelError
from models import build
from protocols import codes
from protocols.errors import HintedError, port_error
from provisioning import errors as prov_errors
from tests.cli.run import ROOT

SOURCES = ("cityedge", "protocols", "edge", "cloud_bridge", "provisioning", "sim", "models")
CODE = re.compile(r"\bCE\d{3}\b")


def test_codes_are_unique_well_formed_and_documented() -> None:
    seen = [c.code for c in codes._ALL]
    assert len(seen) == len(set(seen)) == len(codes.CODES)
    for c in codes._ALL:
        assert CODE.fullmatch(c.code) and c.meaning and c.hint, c
        assert c.meaning == c.meaning.strip() and "|" not in c.meaning + c.hint
    committed = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert committed == codes.markdown(), "run 'cityedge errors --write' and commit the result"


def test_every_code_in_the_sources_is_registered() -> None:
    used: dict[str, list[str]] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT).parts[1:2] == ("build",) or path.name == "codes.py":
                continue
            for code in CODE.findall(path.read_text(encoding="utf-8")):
                used.setdefault(code, []).append(str(path.relative_to(ROOT)))
    unknown = {c: where for c, where in used.items() if c not in codes.CODES}
    assert not unknown, f"codes used but not registered in protocols/codes.py: {unknown}"
    # the registry is not a list of wishes: most codes are raised somewhere
    assert len(used) >= len(codes.CODES) - 3


@pytest.mark.parametrize(
    ("error", "code", "exit_code"),
    [
        (edge_errors.ConfigError, "CE100", 1),
        (edge_errors.MissingExtraError, "CE101", 3),
        (edge_errors.PermanentError, "CE200", 3),
        (edge_errors.DeviceError, "CE310", 3),
        (ModelError, "CE400", 3),
        (CameraError, "CE410", 3),
        (FaceStoreError, "CE420", 1),
        (EnrollmentError, "CE421", 1),
        (prov_errors.ProvisionInputError, "CE500", 1),
        (prov_errors.ProvisionRunError, "CE510", 3),
        (prov_errors.SelfTestFailed, "CE520", 4),
    ],
)
def test_one_meaning_per_code_across_gateway_faces_and_provisioning(
    error: type[HintedError], code: str, exit_code: int
) -> None:
    err = error(["x"]) if error is edge_errors.ConfigError else error("x")
    assert err.code == code and err.exit_code == exit_code


def test_model_build_errors_exit_as_their_codes_say() -> None:
    for err in (build.BuildError, build.ChecksumMismatch, build.FetchError):
        assert err.code in codes.CODES
        assert err.exit_code == codes.CODES[err.code].exit


def test_an_error_reads_code_message_and_hint() -> None:
    err = HintedError("no reply from unit 3", code="CE311")
    assert err.for_humans() == (
        "CE311: no reply from unit 3\n  hint: " + codes.CODES["CE311"].hint
    )  # the code's default hint when the error has none
    assert err.as_json() == {
        "ok": False,
        "code": "CE311",
        "error": "no reply from unit 3",
        "hint": codes.CODES["CE311"].hint,
        "exit": 3,
    }
    many = edge_errors.ConfigError(["a.yaml:1: x: bad", "a.yaml:2: y: bad"])
    assert many.for_humans().splitlines()[:2] == [
        "CE100: a.yaml:1: x: bad",
        "CE100: a.yaml:2: y: bad",
    ]
    assert many.as_json()["problems"] == ["a.yaml:1: x: bad", "a.yaml:2: y: bad"]
    assert edge_errors.ExitCode is codes.ExitCode


def test_a_busy_port_is_named_not_a_tuple() -> None:
    err = port_error("127.0.0.1", 5020, "Modbus TCP", OSError(98, "Address already in use"))
    assert err.code == "CE003" and err.exit_code == 3
    assert err.message == "TCP port 5020 on 127.0.0.1 (Modbus TCP) is in use"
    assert "('127.0.0.1'" not in err.for_humans() and "5020" in (err.hint or "")


def test_the_errors_command_explains_a_code() -> None:
    from typer.testing import CliRunner

    from cityedge.cli import app

    done = CliRunner().invoke(app, ["errors", "ce003"])
    assert done.exit_code == 0 and done.stdout.startswith("CE003 (exit 3): a network port")
    assert Path(ROOT / "docs" / "errors.md").is_file()


def test_a_log_record_stays_one_line() -> None:
    import logging

    from edge.logs import FORMAT, OneLineFormatter

    err = HintedError("no reply from unit 3", hint="check A/B", code="CE311")
    record = logging.LogRecord(
        "edge.x", logging.WARNING, __file__, 1, "poll failed: %s", (err.for_humans(),), None
    )
    line = OneLineFormatter(FORMAT).format(record)
    assert "\n" not in line and line.endswith(
        "poll failed: CE311: no reply from unit 3; hint: check A/B"
    )
    forged = logging.LogRecord(
        "edge.x", logging.INFO, __file__, 1, "name %s", ("x\n2026 ERROR fake",), None
    )
    assert "\n" not in OneLineFormatter(FORMAT).format(forged)
