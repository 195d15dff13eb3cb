"""Wrong inputs and busy ports for every top-level command, run as a person runs them
(``.venv/bin/cityedge`` and ``python -m models.build`` as subprocesses, output piped).

Each row checks: the exit code (and that it is the one the registry gives the code), that
stderr is exactly one error line ``CEnnn: ...`` and its hint line, that the code is registered,
what the message must name (a path, a port, what to use instead), what it must never show (a
secret), and that no traceback appears anywhere. Busy ports are held by real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import codes
from provisioning.site import Site
from tests.cli.run import MODELS_BUILD, ROOT, busy_ports, closed_port, run_all
from tests.edge.face_access.test_cli import site as face_site
from tests.edge.test_config import GOOD

SHORT_SECRET = "short-secret-9"  # 14 characters: too short, and never to be echoed


@dataclass(frozen=True)
class Row:
    name: str
    argv: Sequence[str]
    code: str
    names: tuple[str, ...] = ()  # what the error line must contain
    never: tuple[str, ...] = ()  # what no output may contain
    cwd: Path | None = None  # the test's temp folder when None


def _files(tmp: Path, http_port: int) -> dict[str, Path]:
    files = {
        "missing": tmp / "missing.yaml",
        "folder": tmp / "a-folder",
        "text": tmp / "notes.txt",
        "site": tmp / "site.yaml",
        "typo": tmp / "typo.yaml",
        "gate": tmp / "gate" / "site.yaml",
        "key": tmp / "ops.key",
        "site_dir": tmp / "prov",
    }
    files["folder"].mkdir()
    files["text"].write_text("not a database, not a key\n", encoding="utf-8")
    site = GOOD.replace("${BROKER_PASSWORD}", "pw")
    files["site"].write_text(f"http: {{port: {http_port}}}\n{site}", encoding="utf-8")
    files["typo"].write_text(site.replace("above: 9.0", "abvoe: 9.0"), encoding="utf-8")
    files["gate"].parent.mkdir()
    assert face_site(files["gate"].parent) == files["gate"]
    (files["gate"].parent / "secrets.yaml").write_text(
        f"gateway_secret: {SHORT_SECRET}\n", encoding="utf-8"
    )
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files["key"].write_bytes(key)
    Site.init(files["site_dir"], "riverside", "127.0.0.1")
    return files


def table(tmp: Path, tcp: int, udp: int) -> list[Row]:
    f = _files(tmp, tcp)
    free = closed_port()
    site_dir = str(f["site_dir"])
    cmd = ["cityedge", "command", "ping", "--site", "s", "--gateway", "g", "--kid", "k"]
    # fmt: off
    return [
        # check-config
        Row("check-config missing", ["cityedge", "check-config", str(f["missing"])], "CE002", (str(f["missing"]),)),
        Row("check-config folder", ["cityedge", "check-config", str(f["folder"])], "CE002", ("not a file",)),
        Row("check-config typo", ["cityedge", "check-config", str(f["typo"])], "CE100", (f"{f['typo']}:", 'did you mean "above"')),
        Row("check-config short secret", ["cityedge", "check-config", str(f["gate"])], "CE100", ("must be at least 16 characters", "**********"), (SHORT_SECRET, "items")),
        Row("check-config binary file", ["cityedge", "check-config", sys.executable], "CE100", ("not UTF-8 text",)),
        Row("check-config unknown option", ["cityedge", "check-config", "--bogus", str(f["site"])], "CE001", ("--bogus",)),
        # run
        Row("run without --config", ["cityedge", "run"], "CE001", ("--config",)),
        Row("run missing file", ["cityedge", "run", "-c", str(f["missing"])], "CE002", (str(f["missing"]),)),
        Row("run bad log level", ["cityedge", "run", "-c", str(f["site"]), "--log-level", "loud"], "CE005", ("--log-level",)),
        Row("run http port busy", ["cityedge", "run", "-c", str(f["site"])], "CE003", (f"port {tcp}", "http")),
        # simulate
        Row("simulate missing serial", ["cityedge", "simulate", "water-sonde", "--serial", str(tmp / "ttyUSB9")], "CE004", (str(tmp / "ttyUSB9"),)),
        Row("simulate serial not a device", ["cityedge", "simulate", "water-sonde", "--serial", str(f["text"])], "CE004", ("not a serial device",)),
        Row("simulate busy port", ["cityedge", "simulate", "water-sonde", "--port", str(tcp)], "CE003", (f"port {tcp}", "--port")),
        Row("simulate busy control port", ["cityedge", "simulate", "air-station", "--port", str(free), "--control-port", str(tcp)], "CE003", (f"port {tcp}", "control API")),
        Row("simulate unknown profile", ["cityedge", "simulate", "modbus", "nosuch"], "CE005", ("nosuch", "water-sonde")),
        Row("simulate bad fault", ["cityedge", "simulate", "water-sonde", "--fault", "bogus"], "CE005", ("KIND[:ARG]@START",)),
        Row("simulate bad parity", ["cityedge", "simulate", "water-sonde", "--parity", "X"], "CE005", ("N, E or O",)),
        Row("simulate bad dead units", ["cityedge", "simulate", "water-sonde", "--dead", "a,b"], "CE005", ("3,7,11",)),
        Row("simulate port out of range", ["cityedge", "simulate", "water-sonde", "--port", "70000"], "CE005", ("1-65535",)),
        Row("simulate control port negative", ["cityedge", "simulate", "hj212-platform", "--port", str(free), "--control-port", "-1"], "CE005", ("--control-port -1",)),
        Row("simulate port not a number", ["cityedge", "simulate", "water-sonde", "--port", "fifty"], "CE001", ("--port",)),
        Row("simulate fleet busy", ["cityedge", "simulate", "fleet", "--port", str(tcp)], "CE003", (f"port {tcp}",)),
        Row("simulate gateways bad broker", ["cityedge", "simulate", "gateways", "--broker", "127.0.0.1:1883,nohost"], "CE005", ("'nohost'", "host:port")),
        Row("simulate gateways bad protocol", ["cityedge", "simulate", "gateways", "--protocol", "4"], "CE005", ("3.1.1",)),
        Row("broker-config bad engine", ["cityedge", "broker-config", "--site", "s", "--gateway", "g", "--out", str(tmp / "bc"), "--engine", "emqx"], "CE005", ("mosquitto or nats",), cwd=tmp),
        Row("simulate coap-air busy", ["cityedge", "simulate", "coap-air", "--port", str(udp)], "CE003", (f"UDP port {udp}",)),
        Row("simulate hj212 busy", ["cityedge", "simulate", "hj212-platform", "--port", str(tcp)], "CE003", (f"port {tcp}",)),
        Row("simulate junction busy", ["cityedge", "simulate", "junction", "--port", str(tcp)], "CE003", (f"port {tcp}",)),
        Row("simulate junction scenario", ["cityedge", "simulate", "junction", "--scenario", "nope"], "CE005", ("morning-peak",)),
        Row("simulate bin-video no folder", ["cityedge", "simulate", "bin-video", str(tmp / "no" / "x.avi")], "CE002", (str(tmp / "no"),)),
        Row("simulate factory-clip no folder", ["cityedge", "simulate", "factory-clip", str(tmp / "no" / "f.avi")], "CE002", (str(tmp / "no"),)),
        # profiles, schema, config-reference, errors
        Row("profiles unknown option", ["cityedge", "profiles", "--bogus"], "CE001", ("--bogus",)),
        Row("schema unknown option", ["cityedge", "schema", "--bogus"], "CE001", ("--bogus",)),
        Row("config-reference unknown option", ["cityedge", "config-reference", "--wirte"], "CE001", ("--write",)),
        Row("errors unknown code", ["cityedge", "errors", "CE999"], "CE005", ("CE999",)),
        # demo
        Row("demo old --duration", ["cityedge", "demo", "--duration", "5"], "CE001", ("--duration-s",)),
        Row("demo duration not a number", ["cityedge", "demo", "--duration-s", "soon"], "CE001", ("--duration-s",)),
        # ingest
        Row("ingest status missing db", ["cityedge", "ingest", "--status", "--db", str(tmp / "typo.db")], "CE002", (str(tmp / "typo.db"),)),
        Row("ingest status not a db", ["cityedge", "ingest", "--status", "--db", str(f["text"])], "CE600", (str(f["text"]),)),
        Row("ingest bad broker", ["cityedge", "ingest", "--broker", "nohost"], "CE005", ("host:port",), cwd=tmp),
        Row("ingest bad nats url", ["cityedge", "ingest", "--nats", "127.0.0.1:4222"], "CE005", ("nats://host:port",), cwd=tmp),
        Row("ingest nats group with a dot", ["cityedge", "ingest", "--nats", "nats://127.0.0.1:4222", "--group", "a.b"], "CE005", ("durable consumer",), cwd=tmp),
        Row("ingest nats user without nats", ["cityedge", "ingest", "--nats-user", "brain"], "CE005", ("--nats",), cwd=tmp),
        Row("ingest nats password file missing", ["cityedge", "ingest", "--nats", "nats://127.0.0.1:4222", "--nats-password-file", str(tmp / "nope")], "CE002", (str(tmp / "nope"),), cwd=tmp),
        Row("ingest bad log level", ["cityedge", "ingest", "--log-level", "loud"], "CE005", ("debug",), cwd=tmp),
        # broker-config
        Row("broker-config bad site", ["cityedge", "broker-config", "--site", "a b", "--gateway", "g", "--out", str(tmp / "bc")], "CE005", ("topic level",)),
        Row("broker-config out under a file", ["cityedge", "broker-config", "--site", "s", "--gateway", "g", "--out", str(f["text"] / "bc")], "CE002", (str(f["text"]),)),
        # command-key
        Row("command-key exists", ["cityedge", "command-key", "--out", str(f["key"])], "CE002", ("never overwritten",)),
        Row("command-key no folder", ["cityedge", "command-key", "--out", str(tmp / "no" / "k.pem")], "CE002", (str(tmp / "no" / "k.pem"),)),
        # command
        Row("command key missing", [*cmd, "--signing-key", str(f["missing"])], "CE002", (str(f["missing"]),)),
        Row("command key not PEM", [*cmd, "--signing-key", str(f["text"])], "CE630", (str(f["text"]),)),
        Row("command args not JSON", [*cmd, "--signing-key", str(f["key"]), "--args", "{nope"], "CE005", ("--args",)),
        Row("command broker down", [*cmd, "--signing-key", str(f["key"]), "--broker", f"127.0.0.1:{free}"], "CE610", (f"127.0.0.1:{free}",)),
        # faces
        Row("faces list missing config", ["cityedge", "faces", "list", "-c", str(f["missing"])], "CE002", (str(f["missing"]),)),
        Row("faces delete no face app", ["cityedge", "faces", "delete", "p-1", "-c", str(f["site"])], "CE005", ("no face_access app",)),
        Row("faces enroll missing photo", ["cityedge", "faces", "enroll", str(tmp / "me.jpg"), "--id", "p-1", "--name", "P", "--consent-ref", "f-1", "-c", str(f["gate"])], "CE002", (str(tmp / "me.jpg"),)),
        Row("faces reenroll folder", ["cityedge", "faces", "reenroll", "-c", str(f["folder"])], "CE002", (str(f["folder"]),)),
        Row("faces audit-verify no config", ["cityedge", "faces", "audit-verify"], "CE001", ("--config",)),
        # provision
        Row("provision list no site", ["cityedge", "provision", "list", "-d", str(f["missing"])], "CE500", (str(f["missing"]),)),
        Row("provision init-site twice", ["cityedge", "provision", "init-site", "-d", site_dir, "--site", "riverside", "--broker-host", "h"], "CE500", ("already holds a site",)),
        Row("provision node bad hwid", ["cityedge", "provision", "node", "-d", site_dir, "--hwid", "zz", "--name", "n-1", "--kind", "water"], "CE500", ("zz",)),
        Row("provision ota bad version", ["cityedge", "provision", "ota", "-d", site_dir, "--firmware-version", "one"], "CE500", ("one",)),
        Row("provision self-test old --timeout", ["cityedge", "provision", "self-test", "-d", site_dir, "--name", "n-1", "--timeout", "2"], "CE001", ("--timeout-s",)),
        Row("provision vm busy port", ["cityedge", "provision", "vm", "--image", str(tmp / "b.img"), "--port", str(tcp)], "CE003", (f"port {tcp}",)),
        # python -m models.build
        Row("models.build unknown option", [*MODELS_BUILD, "--bogus"], "CE001", ("--bogus",), cwd=ROOT),
        Row("models.build missing manifest", [*MODELS_BUILD, "--manifest", str(f["missing"])], "CE002", (str(f["missing"]),), cwd=ROOT),
    ]
    # fmt: on


def _check(row: Row, done: subprocess.CompletedProcess[str]) -> list[str]:
    wrong = []
    expected_exit = int(codes.CODES[row.code].exit)
    if done.returncode != expected_exit:
        wrong.append(f"exit {done.returncode}, expected {expected_exit}")
    lines = done.stderr.splitlines()
    if (
        len(lines) != 2
        or not lines[0].startswith(f"{row.code}: ")
        or not lines[1].startswith("  hint: ")
    ):
        wrong.append(f"stderr is not '{row.code}: ...' and its hint line")
    elif lines[0].split(":")[0] not in codes.CODES:
        wrong.append("unregistered code")
    wrong += [f"the error does not name {text!r}" for text in row.names if text not in done.stderr]
    everything = done.stdout + done.stderr
    wrong += [f"shows {text!r}" for text in row.never if text in everything]
    if "Traceback" in everything or "╭─" in everything:
        wrong.append("a traceback or a panel")
    return [f"{row.name}: {w}\n    stderr: {done.stderr!r}" for w in wrong]


def test_wrong_inputs_and_busy_ports_of_every_command(tmp_path: Path) -> None:
    with busy_ports() as (tcp, udp):
        rows = table(tmp_path, tcp, udp)
        results = run_all([(r.argv, r.cwd or tmp_path, None) for r in rows])
    problems = [p for row, done in zip(rows, results, strict=True) for p in _check(row, done)]
    assert not problems, "\n".join(problems)
    # every top-level command has rows
    tops = {r.argv[1] for r in rows if r.argv[0] == "cityedge"}
    assert tops >= {
        "check-config", "run", "simulate", "profiles", "schema", "config-reference", "demo",
        "ingest", "broker-config", "command-key", "command", "faces", "provision",
    }  # fmt: skip
    # a read-only status query never creates the database it was (mis)named
    assert not (tmp_path / "typo.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("typo.db")) == []


def test_json_errors_are_one_object_on_stdout(tmp_path: Path) -> None:
    rows = [
        ["cityedge", "provision", "list", "-d", str(tmp_path / "nope"), "--json"],
        ["cityedge", "check-config", "--json", str(tmp_path / "nope.yaml")],
        ["cityedge", "faces", "list", "--json", "--bogus"],
    ]
    results = run_all([(r, tmp_path, None) for r in rows])
    for argv, done in zip(rows, results, strict=True):
        doc = json.loads(done.stdout)
        assert doc["ok"] is False and doc["code"] in codes.CODES, argv
        assert doc["error"] and doc["hint"] and doc["exit"] == done.returncode, argv
        assert done.stderr == "", argv
    assert [json.loads(d.stdout)["code"] for d in results] == ["CE500", "CE002", "CE001"]


@pytest.mark.parametrize(
    "argv",
    [
        ["cityedge", "--version"],
        ["cityedge", "faces", "list", "--version"],
        ["cityedge", "provision", "ota", "--version"],
        [*MODELS_BUILD, "--version"],
    ],
)
def test_version_from_a_shell(argv: list[str]) -> None:
    (done,) = run_all([(argv, ROOT, None)])
    assert done.returncode == 0 and done.stderr == ""
    assert "cityedge 0." in done.stdout
