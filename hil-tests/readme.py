"""Run the commands of a README as a reader would: every fenced ``sh`` block, in order, in one
scratch folder, one shell session's environment carried from command to command.

Imported as ``readme`` (pytest puts this folder on ``sys.path``); ``test_readme.py`` runs the
project's README.md with it. What the README says about a command is data in the README:

- ``# needs: <what>``, at the end of any line of a command or on a comment line right above it:
  the command needs something this machine has not got (a board, a remote broker, an account):
  not run. The reader sees it.
- An HTML comment right above a block (``<!-- readme-test`` ... ``-->``), one directive a line,
  each naming a command of that block by its first words:

  - ``long: <command> => <text>``: runs until Ctrl-C; ready once it printed ``<text>`` (or, with
    ``=> port <n>``, once 127.0.0.1:<n> accepts connections). It keeps running while the rest
    of its block runs (as in a second terminal), then gets Ctrl-C (SIGINT to its process group)
    and must stop.
  - ``slow: <command> => <why>``: runs only when ``CITYEDGE_README_SLOW=1``.
  - ``skip: <command> => <why>``: never run by the test (it is the test suite itself, or it
    rewrites files of the checkout).

Everything else must exit 0 without a traceback. A failure names the command and its line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

SHELL_FENCES = frozenset({"sh", "bash", "shell", "console"})
NEEDS = re.compile(r"(?:^|\s)#\s*needs:\s*(?P<what>.+?)\s*$")
DIRECTIVE = re.compile(r"^(?P<kind>long|slow|skip):\s*(?P<command>.+?)\s*=>\s*(?P<arg>.+?)\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
TRACEBACK = "Traceback (most recent call last)"

Mode = Literal["run", "long", "skip", "needs"]


class ReadmeError(ValueError):
    """The README's markup is wrong (a directive matching no command, an unclosed block…)."""


@dataclass(frozen=True)
class Command:
    """One command of a README code block."""

    source: str  # as written (continuation lines joined with newlines), comments included
    line: int  # 1-based line of its first physical line in the README
    block: int  # index of its code block: long-running commands stop at the end of it
    mode: Mode = "run"
    ready: str = ""  # long: what it prints once ready, or "port N"
    why: str = ""  # needs, skip, slow: why the test does not run it (slow: unless asked to)
    slow: bool = False

    @property
    def words(self) -> list[str]:
        return _words(self.source)

    def __str__(self) -> str:
        return f"README.md:{self.line}: {' '.join(self.source.split())}"


@dataclass
class Failure:
    command: Command
    what: str
    output: str = ""

    def __str__(self) -> str:
        tail = "\n".join(self.output.rstrip().splitlines()[-25:])
        return f"{self.command}\n  {self.what}" + (f"\n{_indent(tail)}" if tail else "")


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())


def _words(source: str) -> list[str]:
    try:
        return shlex.split(source.replace("\\\n", " "), comments=True)
    except ValueError:
        return source.split()


def parse(markdown: str) -> list[Command]:
    """The commands of every shell block, in order; :class:`ReadmeError` for wrong markup."""
    lines = markdown.splitlines()
    commands: list[Command] = []
    directives: list[tuple[int, re.Match[str]]] = []
    block = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- readme-test"):
            start = i
            body = line.strip().removeprefix("<!-- readme-test")
            while "-->" not in body:
                i += 1
                if i == len(lines):
                    raise ReadmeError(f"README.md:{start + 1}: <!-- readme-test is never closed")
                body += "\n" + lines[i]
            body = body.split("-->")[0]
            for offset, text in enumerate(body.splitlines()):
                if not text.strip():
                    continue
                m = DIRECTIVE.match(text.strip())
                if m is None:
                    raise ReadmeError(
                        f"README.md:{start + 1 + offset}: {text.strip()!r} is not a directive "
                        "(long|slow|skip: <command> => <text>)"
                    )
                directives.append((start + 1 + offset, m))
            nxt = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), len(lines))
            if nxt == len(lines) or not FENCE.match(lines[nxt]):
                raise ReadmeError(
                    f"README.md:{start + 1}: a readme-test comment must precede a block"
                )
            i += 1
            continue
        fence = FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ReadmeError(f"README.md:{i + 1}: code block never closed")
        if fence["lang"] in SHELL_FENCES:
            found = _block(lines, i + 1, end, block)
            commands += _apply(found, directives, block)
            block += 1
        elif directives:
            raise ReadmeError(
                f"README.md:{directives[0][0]}: readme-test comment before a non-shell block"
            )
        directives = []
        i = end + 1
    return commands


def _block(lines: list[str], start: int, end: int, block: int) -> list[Command]:
    found: list[Command] = []
    needs = ""
    i = start
    while i < end:
        text = lines[i].strip()
        if not text:
            needs = ""
            i += 1
            continue
        if text.startswith("#"):
            m = NEEDS.match(text)
            if m:
                needs = m["what"]
            i += 1
            continue
        first = i
        physical = [lines[i]]
        while _continues(lines[i]) and i + 1 < end:
            i += 1
            physical.append(lines[i])
        source = "\n".join(p.strip() for p in physical)
        marked = next((m["what"] for p in physical if (m := NEEDS.search(p))), "") or needs
        found.append(Command(source, first + 1, block, "needs" if marked else "run", why=marked))
        needs = ""
        i += 1
    return found


def _continues(line: str) -> bool:
    return line.rstrip().endswith("\\")


def _apply(
    commands: list[Command], directives: list[tuple[int, re.Match[str]]], block: int
) -> list[Command]:
    out = list(commands)
    for line, m in directives:
        prefix = _words(m["command"])
        hits = [k for k, c in enumerate(out) if c.words[: len(prefix)] == prefix]
        if len(hits) != 1:
            raise ReadmeError(
                f"README.md:{line}: '{m['command']}' matches {len(hits)} commands of the block "
                "below (it must match one)"
            )
        c = out[hits[0]]
        if c.mode != "run" and m["kind"] != "slow":
            raise ReadmeError(f"README.md:{line}: {c} is marked {c.mode!r} already")
        arg = m["arg"].strip()
        if m["kind"] == "long":
            out[hits[0]] = replace(c, mode="long", ready=arg.strip('"'))
        elif m["kind"] == "skip":
            out[hits[0]] = replace(c, mode="skip", why=arg)
        else:
            out[hits[0]] = replace(c, slow=True, why=arg)
    return out


def exported_names(markdown: str) -> set[str]:
    """Variables the README exports (the runner's starting environment must not have them)."""
    names: set[str] = set()
    for m in re.finditer(r"\bexport\s+([^\n#]+)", markdown):
        names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", m[1]))
    return names


@dataclass
class _Running:
    command: Command
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Runner:
    """Runs commands in ``workdir`` with ``env`` as the shell session's starting environment."""

    workdir: Path
    env: dict[str, str]
    scratch: Path  # the runner's own files (shell state, logs of long-running commands)
    ready_timeout_s: float = 90.0
    command_timeout_s: float = 600.0
    stop_timeout_s: float = 30.0
    slow: bool = False
    ran: list[tuple[Command, float]] = field(default_factory=list)
    skipped: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cwd = self.workdir
        self.scratch.mkdir(parents=True, exist_ok=True)

    def run(self, commands: list[Command]) -> list[Failure]:
        failures: list[Failure] = []
        running: list[_Running] = []
        block = commands[0].block if commands else 0
        try:
            for c in commands:
                if c.block != block:
                    failures += self._stop(running)
                    running = []
                    block = c.block
                if c.mode in ("needs", "skip") or (c.slow and not self.slow):
                    self.skipped.append(c)
                    continue
                began = time.monotonic()
                if c.mode == "long":
                    started, failure = self._start(c)
                    if started is not None:
                        running.append(started)
                else:
                    failure = self._run(c)
                self.ran.append((c, time.monotonic() - began))
                if failure is not None:
                    failures.append(failure)
        finally:  # whatever happens (an interrupted test too), nothing is left running
            failures += self._stop(running)
        return failures

    def _script(self, c: Command, after: str = "") -> str:
        return f'cd -- "$__README_CWD" || exit 97\nunset __README_CWD\nset -o pipefail\n{c.source}\n{after}'

    def _env(self) -> dict[str, str]:
        return {**self.env, "__README_CWD": str(self.cwd)}

    def _run(self, c: Command) -> Failure | None:
        state = self.scratch / "state"
        after = (
            "__readme_rc=$?\n"
            f"env -0 > {shlex.quote(str(state))}.env\n"
            f"pwd > {shlex.quote(str(state))}.cwd\n"
            "exit $__readme_rc\n"
        )
        popen = subprocess.Popen(
            ["bash", "-c", self._script(c, after)],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )
        try:
            raw_out, _ = popen.communicate(timeout=self.command_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            raw_out, _ = popen.communicate()
            return Failure(
                c,
                f"still running after {self.command_timeout_s:.0f} s",
                raw_out.decode(errors="replace"),
            )
        out = raw_out.decode(errors="replace")
        with contextlib.suppress(OSError):
            raw = Path(f"{state}.env").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            self.env = {k: v for k, v in env.items() if k not in ("_", "SHLVL", "OLDPWD")}
            self.cwd = Path(Path(f"{state}.cwd").read_text().strip())
        if popen.returncode != 0:
            return Failure(c, f"exited with {popen.returncode}", out)
        if TRACEBACK in out:
            return Failure(c, "exited 0 but printed a traceback", out)
        return None

    def _start(self, c: Command) -> tuple[_Running | None, Failure | None]:
        port = re.fullmatch(r"port (\d+)", c.ready)
        busy = _wait_free(_ports(c) | ({int(port[1])} if port else set()), self.ready_timeout_s)
        if busy:
            return None, Failure(
                c,
                f"port {', '.join(map(str, sorted(busy)))} in use on this machine for "
                f"{self.ready_timeout_s:.0f} s before the command could start (another program?)",
            )
        log = self.scratch / f"long-{c.line}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["bash", "-c", self._script(c)],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_as_from_a_terminal,
            )
        r = _Running(c, popen, log)
        deadline = time.monotonic() + self.ready_timeout_s
        try:
            while time.monotonic() < deadline:
                ready = _listening(int(port[1])) if port else c.ready in r.output()
                if ready:
                    return r, None
                if popen.poll() is not None:
                    return None, Failure(
                        c,
                        f"exited with {popen.returncode} before it was ready ({c.ready})",
                        r.output(),
                    )
                time.sleep(0.1)
        except BaseException:  # interrupted while waiting (the test's timeout): not left behind
            self._stop([r])
            raise
        failure = Failure(
            c,
            f"not ready within {self.ready_timeout_s:.0f} s: never printed {c.ready!r}",
            r.output(),
        )
        self._stop([r])
        return None, failure

    def _stop(self, running: list[_Running]) -> list[Failure]:
        """Ctrl-C to each (SIGINT to its process group, newest first), then wait for all."""
        failures = []
        for r in running:
            if r.popen.poll() is not None and r.popen.returncode != 0:
                failures.append(
                    Failure(r.command, f"stopped by itself with {r.popen.returncode}", r.output())
                )
        for r in reversed(running):
            if r.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.popen.pid, signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout_s
        for r in running:
            try:
                r.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(
                    Failure(r.command, f"still running {self.stop_timeout_s:.0f} s after Ctrl-C")
                )
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the group: children left behind too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.popen.pid, sig)
                    time.sleep(0.2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.popen.wait(5)
            if TRACEBACK in r.output():
                failures.append(Failure(r.command, "printed a traceback", r.output()))
        return failures


def _as_from_a_terminal() -> None:
    """In the child: Ctrl-C and Ctrl-\\ do what they do in a terminal, even when the test runs
    where they are ignored (a background job ignores SIGINT, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _ports(c: Command) -> set[int]:
    """TCP ports a command says it listens on (``--port N``, ``--control-port N``, ``-p N``)."""
    words = c.words
    return {
        int(words[k + 1])
        for k, w in enumerate(words[:-1])
        if w in ("--port", "--control-port", "-p") and words[k + 1].isdigit()
    }


def _wait_free(ports: set[int], timeout_s: float) -> set[int]:
    """Wait until nothing listens on ``ports``; returns those still taken at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (busy := {p for p in ports if _listening(p)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    return busy


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


def scratch_checkout(
    root: Path, into: Path, copied: frozenset[str] = frozenset({"examples"})
) -> Path:
    """A folder that looks like a fresh clone after ``make test``: each top-level entry of the
    checkout linked (``.venv`` and ``models/build`` included), ``copied`` ones copied (a gateway
    writes its outbox beside its site file)."""
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    skip = {".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__"}
    for entry in root.iterdir():
        if entry.name in skip:
            continue
        target = into / entry.name
        if entry.name in copied:
            shutil.copytree(
                entry,
                target,
                ignore=shutil.ignore_patterns("cityedge-state", "faces", "__pycache__"),
            )
        else:
            target.symlink_to(entry)
    return into


def reader_env(base: Mapping[str, str], drop: set[str]) -> dict[str, str]:
    """The environment of a new shell: no virtualenv active (the README says how), none of the
    variables the README itself exports."""
    env = {k: v for k, v in base.items() if k not in drop and k != "VIRTUAL_ENV"}
    path = [
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if p and not p.endswith(os.path.join(".venv", "bin"))
    ]
    env["PATH"] = os.pathsep.join(path or ["/usr/local/bin", "/usr/bin", "/bin"])
    return env


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """The README uses fixed ports (5020, 8080, 8883…): one README run at a time per machine."""
    import fcntl

    with (Path(tempfile.gettempdir()) / "cityedge-readme-test.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
