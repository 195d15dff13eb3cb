"""Helpers for hardware-in-the-loop scenarios: real processes, a real MQTT subscriber.

Imported as ``hil`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope as env
from protocols import topics
from sim.localsite import Proc, cityedge_argv, start, wait_port


@dataclass
class Received:
    topic: str
    envelope: env.EnvelopeModel
    at: float  # monotonic time of arrival


@dataclass
class Subscriber:
    """A real MQTT subscriber (paho, its own network thread) standing in for the city brain."""

    port: int
    filter: str = topics.SUBSCRIBE_ALL
    messages: list[Received] = field(default_factory=list)
    invalid: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"brain-{self.port}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe(self.filter, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if topics.parse(msg.topic).kind in topics.RESERVED_KINDS:
            return  # births, deaths and commands are not envelopes
        try:
            e = env.decode(msg.payload)
        except ValueError:
            with self._lock:
                self.invalid.append(bytes(msg.payload))
            return
        with self._lock:
            self.messages.append(Received(msg.topic, e, time.monotonic()))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def of(self, kind: str, device: str | None = None, since: float = 0.0) -> list[Received]:
        return [
            m
            for m in self.snapshot()
            if m.envelope.kind == kind
            and (device is None or m.envelope.device == device)
            and m.at >= since
        ]

    def wait_for(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_simulator(
    procs: list[Proc],
    workdir: Path,
    profile: str,
    port: int,
    control_port: int,
    *faults: str,
    name: str | None = None,
) -> Proc:
    argv = cityedge_argv(
        "simulate", profile, "--port", str(port), "--control-port", str(control_port)
    )
    for f in faults:
        argv += ["--fault", f]
    proc = start(name or f"sim-{profile}-{port}", argv, workdir)
    procs.append(proc)
    wait_port(port, proc=proc)
    wait_port(control_port, proc=proc)
    return proc


def start_gateway(procs: list[Proc], workdir: Path, config: Path, http_port: int) -> Proc:
    proc = start("gateway", cityedge_argv("run", "--config", str(config)), workdir)
    procs.append(proc)
    wait_port(http_port, proc=proc, timeout_s=20)
    return proc


def http_json(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def http_text(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def tagged_processes(tag: str, but: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Processes whose environment carries ``CITYEDGE_TEST_TAG=tag`` (children inherit it), but
    ``but``: what a test started and left behind, whatever else runs on this shared machine."""

    def tagged(p: psutil.Process) -> bool:
        try:
            return p.pid not in but and p.environ().get("CITYEDGE_TEST_TAG") == tag
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            return False

    return [p for p in psutil.process_iter() if tagged(p)]
