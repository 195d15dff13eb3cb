"""Cards and PINs at the real gateway: the card reader simulator (a Wiegand reader behind a
serial device server), the gate controller simulator and mosquitto. A resident's card and PIN
open the relay; noise on the reader's line opens nothing; an unknown card is refused; guessing
PINs locks the reader; no card number or PIN reaches the city brain or the gateway's log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from face_site import enroll, make_site, segment, start, start_card_reader, wait_access
from hil import Subscriber, http_json

from protocols import envelope as env
from sim.localsite import Broker, Proc, cityedge_argv

CARD, PIN = "12:34567", "480613"


def test_cards_and_pins_open_noise_does_not_and_guessing_locks(
    tmp_path: Path,
    mosquitto: Broker,
    subscriber_factory: Callable[[int], Subscriber],
    procs: list[Proc],  # after the broker: the gateway stops (and flushes) before it
) -> None:
    reader = start_card_reader(procs, tmp_path)
    site = make_site(
        tmp_path,
        procs,
        [segment("empty", None, 1.0)],
        broker=mosquitto,
        loop=True,
        sources=reader.source,
        extra="    readers: {names: [lobby], max_failures: 3, lockout_s: 60}\n",
    )
    enroll(site, "p-0102", "张伟", None)  # no face: card and PIN only
    faces = ["faces", "--config", str(site.config)]
    for argv, stdin in (
        (["card", "add", "--id", "p-0102", CARD], None),
        (["pin", "set", "--id", "p-0102"], PIN + "\n"),
    ):
        argv = cityedge_argv(faces[0], *argv, *faces[1:])
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    sub = subscriber_factory(mosquitto.port)
    gateway = start(site, procs)
    reader.wait_connected()
    present = reader.present
    present("card", {"card": CARD})
    wait_access(sub, 1, timeout_s=30)
    for noise in ({"line": "W26:0000000"}, {"raw_hex": "00ff13fe0d0a"}, {"line": "W8:BB"}):
        present("line", noise)
    time.sleep(1.2)  # the relay closes (open_s 1) before the next request
    present("keys", {"keys": PIN + "#", "gap_s": 0.02})
    wait_access(sub, 2, timeout_s=10)
    present("card", {"card": "99:1"})  # not enrolled
    for guess in ("111111", "222222"):
        present("keys", {"keys": guess + "#", "gap_s": 0.02})
    present("keys", {"keys": PIN + "#", "gap_s": 0.02})  # right, but the reader is locked
    wait_access(sub, 6, timeout_s=10)
    ps = [
        m.envelope.payload for m in sub.of("access") if isinstance(m.envelope, env.AccessEnvelope)
    ]
    got = [(p.method, p.decision.value, p.person, p.refusal, p.relay) for p in ps]
    print("\naccess events:", *got, sep="\n  ")
    assert got == [
        ("card", "granted", "p-0102", None, "opened"),
        ("pin", "granted", "p-0102", None, "opened"),
        ("card", "denied", "unknown", "unknown", "not_opened"),
        ("pin", "denied", "unknown", "unknown", "not_opened"),
        ("pin", "denied", "unknown", "locked", "not_opened"),  # the third wrong one in a row
        ("pin", "denied", "unknown", "locked", "not_opened"),  # even the right PIN, for now
    ]
    assert all(p.reader == "lobby" and p.camera is None and p.liveness is None for p in ps)

    def relay() -> list[bool]:
        writes = http_json(f"http://127.0.0.1:{site.control_port}/writes")
        return [bool(w["value"]) for w in writes if w["point"] == "relay"]

    deadline = time.monotonic() + 10
    while len(relay()) < 4 and time.monotonic() < deadline:  # the second opening closes
        time.sleep(0.2)
    assert relay() == [True, False] * 2
    gateway.stop()
    log = gateway.log_path.read_text(encoding="utf-8", errors="replace")
    assert "skipped" in log  # the noise was seen, and counted
    for m in sub.snapshot():
        raw = env.encode(m.envelope).decode()
        assert "34567" not in raw and PIN not in raw and "张伟" not in raw
    for secret in ("34567", PIN, "111111", "222222"):
        assert secret not in log, secret
