"""`make demo`'s command on a real 80x24 terminal (a tmux pane): the readings, the open alarms
and the newest events are all on screen, the row in alarm is highlighted, nothing valid is
counted as invalid, a raised alarm and its clear show within 90 s, and Ctrl-C stops everything
and says what became of the demo's work folder."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from hil import tagged_processes

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EVENT = re.compile(r"^\d\d:\d\d:\d\d ALARM (RAISED|CLEARED)\s+\w+ (\S+) (\w+)=")
EXITED = re.compile(r"^\[demo exited with (\d+)\]")
STATUS = re.compile(r"^gw-demo-01 online \(session 1\) · \d+ messages \([\d.]+/s\), (\d+) invalid")


@dataclass
class Pane:
    """A detached tmux session on a private server socket (``-L``), stopped by its PID."""

    tmux: str
    socket: str
    env: dict[str, str]
    server_pid: int = 0
    socket_path: str = ""

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-u", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=self.env,
        )
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def screen(self) -> list[str]:
        """The pane as it looks, with colours (SGR escapes) kept."""
        return self.run("capture-pane", "-p", "-e", "-t", "demo").splitlines()

    def close(self) -> None:
        """Close the terminal, as closing its window does (the demo gets SIGHUP); then wait for
        everything the demo started to stop, and stop by PID what did not."""
        subprocess.run(
            [self.tmux, "-L", self.socket, "kill-server"],
            capture_output=True,
            timeout=10,
            env=self.env,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # tmux leaves its socket file behind

    def leftovers(self, timeout_s: float) -> list[int]:
        """PIDs of what the demo started that still run after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (left := self.tagged()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return [p.pid for p in left]

    def tagged(self) -> list[psutil.Process]:
        return tagged_processes(self.env["CITYEDGE_TEST_TAG"], but=frozenset({self.server_pid}))

    def exit_status(self) -> str | None:
        """The demo's exit status, once the shell that ran it printed it."""
        lines = [ANSI.sub("", line) for line in self.screen()]
        return next((m[1] for line in lines if (m := EXITED.match(line))), None)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is not installed: run 'make sysdeps' (apt-get install tmux)")
    conf = tmp_path / "tmux.conf"
    # keep the pane after the demo exits, to read its last words
    conf.write_text("set -g remain-on-exit on\nset -g status off\n")
    env = {**os.environ, "LANG": "C.UTF-8", "CITYEDGE_TEST_TAG": str(uuid.uuid4())}
    p = Pane(tmux, f"cityedge-demo-test-{uuid.uuid4().hex[:12]}", env)
    cityedge = Path(sys.executable).with_name("cityedge")
    p.run(
        "-f", str(conf),
        "new-session", "-d", "-s", "demo", "-x", "80", "-y", "24", "-c", str(tmp_path),
        # as from a shell, which says how it ended (tmux's own pane_dead_status is at times
        # left empty)
        "bash", "-c", f"{shlex.quote(str(cityedge))} demo; echo \"[demo exited with $?]\"",
    )  # fmt: skip
    pid, p.socket_path = p.run("display-message", "-p", "#{pid} #{socket_path}").split()
    p.server_pid = int(pid)
    try:
        yield p
    finally:
        p.close()
        for leftover in p.leftovers(30):  # a failed test must not leave the demo's programs
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)


def test_demo_on_an_80x24_terminal_shows_an_alarm_raised_and_cleared(pane: Pane) -> None:
    start = time.monotonic()
    raised: dict[tuple[str, str], float] = {}
    cleared: tuple[str, str] | None = None
    frames = 0
    highlighted: set[tuple[str, str]] = set()
    last: list[str] = []
    while time.monotonic() - start < 90 and cleared is None:
        time.sleep(0.5)
        colour = pane.screen()
        lines = [ANSI.sub("", line).rstrip() for line in colour]
        last = lines
        assert len(lines) <= 24
        if not any(STATUS.match(line) for line in lines):
            continue  # the view has not started yet (or this frame was caught mid-draw)
        frames += 1
        text = "\n".join(lines)
        # a whole frame: every section on screen, nothing valid counted as invalid
        counts = next(m for line in lines if (m := STATUS.match(line)))
        assert counts.group(1) == "0", text
        assert any(line.startswith("Open alarms (") for line in lines), text
        assert any(line.startswith("Events, newest first") for line in lines), text
        assert "ingest stored:" in text or "waiting for the ingest" in text, text
        for point in ("turbidity", "conductivity", "pm2_5", "sample_flow"):
            assert re.search(rf"(^|\s){point}\s+\d", text), (point, text)
        assert not re.search(r"\d\.\d{4,}", text), text  # rounded: no 7.50671
        open_start = next(i for i, line in enumerate(lines) if line.startswith("Open alarms"))
        events_start = next(i for i, line in enumerate(lines) if line.startswith("Events"))
        open_now = lines[open_start + 1 : events_start]
        for line in lines[events_start + 1 :]:
            m = EVENT.match(line)
            if m is None:
                continue
            key = (m.group(2), m.group(3))
            if m.group(1) == "RAISED":
                raised.setdefault(key, time.monotonic())
            elif key in raised:
                cleared = key
        for device, point in raised:
            if any(f"{device} {point}=" in line for line in open_now):
                # its readings row is in an alarm's colours (white on red: SGR 41)
                red = rf"\x1b\[(?:[0-9;]*;)?41m(?:\x1b\[[0-9;]*m)*{point}\b"
                if any(re.search(red, row) for row in colour[1:open_start]):
                    highlighted.add((device, point))
    assert frames, "the live view never showed a whole frame:\n" + "\n".join(last)
    assert raised, "no alarm was raised within 90 s:\n" + "\n".join(last)
    assert cleared is not None, f"{sorted(raised)} raised, none cleared within 90 s:\n" + "\n".join(
        last
    )
    assert cleared in highlighted, f"the row of {cleared} was not highlighted while in alarm"

    pane.run("send-keys", "-t", "demo", "C-c")
    deadline = time.monotonic() + 45
    while (status := pane.exit_status()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    lines = [ANSI.sub("", line).rstrip() for line in pane.screen()]
    text = "\n".join(lines)
    assert status == "0", text
    assert "stopped everything the demo started" in text, text
    removed = [line for line in lines if line.startswith("removed the demo's work folder ")]
    assert removed, text
    folder = Path(removed[0].rsplit(" ", 1)[1])
    assert folder.name.startswith("cityedge-demo-") and not folder.exists(), folder
    assert not pane.leftovers(0), pane.tagged()


def test_closing_the_terminal_stops_everything_the_demo_started(pane: Pane) -> None:
    deadline = time.monotonic() + 60
    while not any(STATUS.match(ANSI.sub("", line)) for line in pane.screen()):
        assert time.monotonic() < deadline, "\n".join(pane.screen())
        time.sleep(0.5)
    started = pane.tagged()
    assert len(started) >= 5, started  # the demo, its broker, two simulators, ingest, gateway
    pane.close()  # SIGHUP, as when the terminal window is closed
    assert not pane.leftovers(30), pane.tagged()
