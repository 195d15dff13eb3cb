"""The one registry of error codes and exit codes, shared by every command.

Every error shown to a person reads ``CEnnn: what is wrong`` and, on the next line,
``  hint: what to do``. A code has one meaning everywhere (``cityedge``, ``cityedge faces``,
``cityedge provision``, ``cityedge ingest``, ``python -m models.build``) and one exit code; the
hint given with an error may be more precise than the code's default hint below.

Codes by hundreds: ``CE0nn`` the command line itself, ``CE1nn`` the site file, ``CE2nn``
permanent gateway errors, ``CE3nn`` field devices (transient), ``CE4nn`` vision and face
access, ``CE5nn`` provisioning, ``CE6nn`` the city brain's side (ingest, broker, commands),
``CE7nn`` the model build. ``docs/errors.md`` is generated from :data:`CODES`
(``cityedge errors --write``); a test keeps it current.

Pure data and string formatting (stdlib only): every room may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final


class ExitCode(IntEnum):
    """Exit codes of every command (``cityedge ...`` and ``python -m models.build``)."""

    OK = 0
    INPUT = 1  # the input is wrong: config problems, an out-of-date file, an argument's value
    USAGE = 2  # unknown option or missing argument
    RUNTIME = 3  # could not run: a missing optional package, a port in use, a peer unreachable
    VERIFY = 4  # the work was done but its check failed (a provisioned node never reported)
    INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT), as a shell counts it (128 + 2)


EXIT_MEANING: Final[dict[ExitCode, str]] = {
    ExitCode.OK: "done",
    ExitCode.INPUT: "the input is wrong (a file, an argument's value, data that failed a check)",
    ExitCode.USAGE: "the command line is wrong (unknown option, missing argument)",
    ExitCode.RUNTIME: "could not run (a port in use, a device or peer unreachable, a missing package)",
    ExitCode.VERIFY: "the work was done but its check failed",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C before it was done",
}


@dataclass(frozen=True)
class Code:
    code: str
    exit: ExitCode
    meaning: str
    hint: str


_HELP = "see the command's help: add -h (e.g. 'cityedge run -h')"

_ALL = (
    # -- the command line -----------------------------------------------------------------------
    Code(
        "CE000",
        ExitCode.RUNTIME,
        "unexpected error: a bug in cityedge",
        "report it with the command you ran and the lines printed above",
    ),
    Code(
        "CE001",
        ExitCode.USAGE,
        "the command line is wrong: unknown option or command, missing or malformed argument",
        _HELP,
    ),
    Code(
        "CE002",
        ExitCode.INPUT,
        "a file or folder named on the command line cannot be used (missing, unreadable, "
        "not writable, or the wrong kind of file)",
        "check the path and its permissions",
    ),
    Code(
        "CE003",
        ExitCode.RUNTIME,
        "a network port cannot be listened on (in use, or not allowed)",
        "stop what uses it ('ss -ltnup' names it) or choose another port",
    ),
    Code(
        "CE004",
        ExitCode.RUNTIME,
        "a serial device cannot be opened",
        "check the device path ('ls /dev/tty*'), that it is plugged in and that this user may "
        "open it (group dialout)",
    ),
    Code("CE005", ExitCode.INPUT, "an argument's value is wrong", _HELP),
    Code(
        "CE006",
        ExitCode.INPUT,
        "a generated file is out of date",
        "run the same command with --write and commit the result",
    ),
    Code(
        "CE007",
        ExitCode.RUNTIME,
        "a program this command starts (broker, simulator, gateway) did not come up",
        "its last log lines are printed above; the full log is in the folder the command names",
    ),
    # -- the site file --------------------------------------------------------------------------
    Code(
        "CE100",
        ExitCode.INPUT,
        "the site file is wrong (one line per problem: file:line: path: what)",
        "fix each line, then check again with 'cityedge check-config FILE'",
    ),
    Code(
        "CE101",
        ExitCode.RUNTIME,
        "an optional dependency is not installed",
        "install the extra the message names, e.g. pip install 'cityedge[modbus]'",
    ),
    # -- the gateway: permanent errors ----------------------------------------------------------
    Code(
        "CE200",
        ExitCode.RUNTIME,
        "a permanent error: retrying will not help",
        "fix what the message names (a point map, credentials), then restart",
    ),
    Code(
        "CE210",
        ExitCode.RUNTIME,
        "an actuation was refused or not confirmed (unknown device or point, value not read back)",
        "check the device and point names and that the device accepts writes",
    ),
    # -- field devices: transient errors (retried with backoff) ---------------------------------
    Code(
        "CE300",
        ExitCode.RUNTIME,
        "a transient error: retried with backoff",
        "usually clears by itself; if it persists, check the peer the message names",
    ),
    Code(
        "CE310",
        ExitCode.RUNTIME,
        "a field device answered with an exception or with data of the wrong size",
        "check the device's profile (register map) against its manual",
    ),
    Code(
        "CE311",
        ExitCode.RUNTIME,
        "a Modbus unit did not answer in time",
        "check A/B polarity, termination, the unit address and the line settings",
    ),
    Code(
        "CE312",
        ExitCode.RUNTIME,
        "a Modbus connection or serial line is unusable",
        "check the cable, the host and port, or the serial device",
    ),
    # -- vision and face access -----------------------------------------------------------------
    Code(
        "CE400",
        ExitCode.RUNTIME,
        "a vision model is missing or its checksum differs from the manifest",
        "run 'make models' (it fetches, converts and verifies them)",
    ),
    Code(
        "CE410",
        ExitCode.RUNTIME,
        "a camera or video cannot be opened or read",
        "check the camera's url or file and that it delivers frames",
    ),
    Code(
        "CE420",
        ExitCode.INPUT,
        "the face store cannot be opened (tampered, moved, or written with another key)",
        "restore the old gateway secret, or the store from a backup",
    ),
    Code(
        "CE421",
        ExitCode.INPUT,
        "a person cannot be enrolled (no face, several faces, a poor photo, a bad id or name)",
        "use a sharp, frontal photo of one person",
    ),
    Code(
        "CE422",
        ExitCode.INPUT,
        "no such person in the face store",
        "list the enrolled ids with 'cityedge faces list'",
    ),
    Code(
        "CE423",
        ExitCode.INPUT,
        "the face access audit log is tampered (its hash chain breaks)",
        "keep the log as evidence and restore it from a backup",
    ),
    Code(
        "CE424",
        ExitCode.INPUT,
        "people need a new photo: their template is from another model and no photo was kept",
        "enrol them again with 'cityedge faces enroll'",
    ),
    Code(
        "CE425",
        ExitCode.INPUT,
        "a person with this id is already enrolled",
        "choose another id, or ask to replace them ('--replace', the page's 'replace' box)",
    ),
    Code(
        "CE426",
        ExitCode.INPUT,
        "the face matches someone already enrolled under another id",
        "check it is not the same person twice; enrol anyway with '--allow-same-face'",
    ),
    Code(
        "CE427",
        ExitCode.INPUT,
        "a card or PIN cannot be enrolled (malformed, too short, or another person's)",
        "a card is FACILITY:NUMBER as printed on it; a PIN has the site's number of digits",
    ),
    Code(
        "CE428",
        ExitCode.INPUT,
        "a visitor pass cannot be issued or read (a bad window, gate, key or text)",
        "see 'cityedge faces pass issue -h'; the gate must trust the issuing key's id",
    ),
    # -- provisioning ---------------------------------------------------------------------------
    Code(
        "CE500",
        ExitCode.INPUT,
        "provisioning: the technician's input is wrong (a hardware id, a name, a file)",
        "correct the value the message names",
    ),
    Code(
        "CE510",
        ExitCode.RUNTIME,
        "provisioning: a tool, a board, the broker or the fleet service failed",
        "check the board's connection and the tool the message names",
    ),
    Code(
        "CE520",
        ExitCode.VERIFY,
        "provisioning: everything was written but the node never reported (self-test)",
        "check the node's power, Wi-Fi and that the site broker was reloaded",
    ),
    Code(
        "CE530",
        ExitCode.VERIFY,
        "provisioning: a node refused an update or rolled it back",
        "read the node's reason; a rolled-back build never reported healthy on that board",
    ),
    # -- the city brain's side ------------------------------------------------------------------
    Code(
        "CE600",
        ExitCode.RUNTIME,
        "the ingest database cannot be opened, read or written",
        "check --db (postgresql://... or an SQLite file) and that the database is up",
    ),
    Code(
        "CE601",
        ExitCode.RUNTIME,
        "the ingest database's events table was made by an older cityedge (not partitioned)",
        "run the ingest once with --pg-migrate (keeps the old table as events_unpartitioned), "
        "or use a new database",
    ),
    Code(
        "CE610",
        ExitCode.RUNTIME,
        "the broker cannot be reached or refused the connection",
        "check --broker host:port, TLS files (--ca, --cert, --key) and the broker's log",
    ),
    Code(
        "CE620",
        ExitCode.RUNTIME,
        "the gateway refused the command",
        "read the reply's error; check the key id and that the gateway knows the key",
    ),
    Code(
        "CE621",
        ExitCode.RUNTIME,
        "no reply from the gateway in time",
        "check the gateway is online (its birth message) or wait longer with --timeout-s",
    ),
    Code(
        "CE630",
        ExitCode.INPUT,
        "a key file cannot be used (not PEM, not Ed25519)",
        "make a key with 'cityedge command-key --out FILE'",
    ),
    # -- the model build ------------------------------------------------------------------------
    Code(
        "CE700",
        ExitCode.INPUT,
        "the model build failed (a manifest or recipe problem)",
        "read the message; the manifest is models/manifest.yaml",
    ),
    Code(
        "CE701",
        ExitCode.INPUT,
        "a built model or a package differs from the checksum the manifest pins",
        "if the change is intended, review it and update models/manifest.yaml",
    ),
    Code(
        "CE702",
        ExitCode.RUNTIME,
        "a registry package cannot be fetched",
        "check the registry is reachable (pip and npm settings), then run it again",
    ),
)

CODES: Final[dict[str, Code]] = {c.code: c for c in _ALL}

UNEXPECTED: Final = "CE000"
USAGE: Final = "CE001"
BAD_PATH: Final = "CE002"
PORT_IN_USE: Final = "CE003"
SERIAL: Final = "CE004"
BAD_VALUE: Final = "CE005"
OUT_OF_DATE: Final = "CE006"
NOT_STARTED: Final = "CE007"


def lookup(code: str) -> Code:
    """The registered code; an unknown one is a bug, reported as ``CE000``."""
    return CODES.get(code) or CODES[UNEXPECTED]


def for_humans(code: str, message: str, hint: str | None = None) -> str:
    """``CEnnn: message`` and ``  hint: ...`` on the next line (the code's default hint when
    none is given). A multi-line message gets the code on every line, the hint once."""
    lines = [f"{code}: {line}" for line in message.splitlines() or [""]]
    return "\n".join([*lines, f"  hint: {hint or lookup(code).hint}"])


def as_json(code: str, message: str, hint: str | None = None) -> dict[str, object]:
    """What ``--json`` prints on stdout for an error."""
    return {
        "ok": False,
        "code": code,
        "error": message,
        "hint": hint or lookup(code).hint,
        "exit": int(lookup(code).exit),
    }


def markdown() -> str:
    """``docs/errors.md``: the exit codes and every error code with its meaning and hint."""
    out = [
        "# Error codes and exit codes",
        "",
        "Generated from `protocols/codes.py` by `cityedge errors --write`; do not edit by hand.",
        "",
        "Every error a command prints reads `CEnnn: what is wrong` and, on the next line,",
        "`  hint: what to do`. With `--json` the same error is one JSON object on stdout:",
        '`{"ok": false, "code": "CEnnn", "error": "...", "hint": "...", "exit": N}`.',
        "A code means the same in every command and always exits with the same exit code.",
        "",
        "## Exit codes",
        "",
        "| exit | meaning |",
        "|---|---|",
        *(f"| {int(e)} | {m} |" for e, m in EXIT_MEANING.items()),
        "",
        "## Error codes",
        "",
        "| code | exit | meaning | default hint |",
        "|---|---|---|---|",
        *(f"| {c.code} | {int(c.exit)} | {c.meaning} | {c.hint} |" for c in _ALL),
        "",
    ]
    return "\n".join(out)
