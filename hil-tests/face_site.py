"""A gate site for the face-access hil-tests: a camera video made from real photos, the gate
controller simulator (or a gate-relay sensor node), mosquitto and the real gateway process."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
from hil import Subscriber, http_json, start_gateway, start_simulator
from playwright.sync_api import Browser, Page

from edge.vision.face_detector import MtcnnDetector
from edge.vision.manifest import ModelStore
from sim.localsite import Broker, Proc, cityedge_argv, free_port
from sim.scenes.faces import Segment, head_crop, write_video

SECRET = "a-long-gateway-secret-for-hil-tests"


@cache
def crop(file: str) -> tuple[int, int, int, int]:
    store = ModelStore()
    img = cv2.imread(str(store.asset(file)))
    assert img is not None
    faces = MtcnnDetector(store).detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return head_crop(max(faces, key=lambda f: f.size).box.tolist(), img.shape)


def segment(kind: str, file: str | None, seconds: float) -> Segment:
    if file is None:
        return Segment("empty", None, seconds)
    return Segment(kind, ModelStore().asset(file), seconds, crop=crop(file))  # type: ignore[arg-type]


@dataclass
class GateSite:
    dir: Path
    config: Path
    http_port: int
    control_port: int  # the gate controller simulator's; 0 when the gate is a node
    gateway: Proc | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"


def make_site(
    workdir: Path,
    procs: list[Proc],
    segments: list[Segment],
    *,
    broker: Broker | None = None,
    liveness: str = "challenge_always",
    extra: str = "",
    camera_url: str | None = None,
    cooldown_s: float = 3,
    loop: bool = False,
    sources: str = "",
    node_source: str | None = None,
) -> GateSite:
    """The site; its camera plays ``segments`` from a video file, or reads ``camera_url`` (a
    live stream) when given. Its gate, device gate-1, is the gate controller simulator on
    Modbus, or with ``node_source`` (an ``mqtt`` source's YAML list item, as ``cityedge
    provision gateway`` prints it) the relay (``relay_on``) of the gate-relay node gate-1."""
    if camera_url is None:
        write_video(workdir / "gate.avi", segments, fps=10)
    http = free_port()
    if node_source is None:
        modbus, control = free_port(), free_port()
        start_simulator(procs, workdir, "gate-controller", modbus, control)
        gate_source = f"""  - type: modbus
    name: gatebus
    host: 127.0.0.1
    port: {modbus}
    timeout_s: 1
    devices: [{{name: gate-1, profile: gate-controller, poll_interval_s: 0.5}}]
"""
        gate = "{device: gate-1, open_s: 1.0}"
    else:
        control, gate_source = 0, node_source.rstrip("\n") + "\n"
        gate = "{device: gate-1, point: relay_on, open_s: 1.0}"
    sinks = (
        f"sinks:\n  - {{type: mqtt, name: brain, host: 127.0.0.1, port: {broker.port}, reconnect_max_s: 1}}\n"
        if broker
        else ""
    )
    config = workdir / "site.yaml"
    config.write_text(
        f"""
site: hil-site
gateway: gw-gate
http: {{port: {http}}}
shutdown_flush_s: 5
sources:
{gate_source}  - {{type: camera, name: cam, camera: cam-1, url: "{camera_url or "gate.avi"}", fps: 10, loop: {str(loop).lower()}}}
{sources}apps:
  - type: face_access
    name: gate
    cameras: [cam-1]
    gate: {gate}
    secret: !secret gateway_secret
    liveness: {liveness}
    cooldown_s: {cooldown_s}
    unknown_interval_s: 30
{extra}{sinks}""",
        encoding="utf-8",
    )
    (workdir / "secrets.yaml").write_text(f"gateway_secret: {SECRET}\n", encoding="utf-8")
    return GateSite(workdir, config, http, control)


def enroll(site: GateSite, person: str, name: str, photo: str | None) -> None:
    """Enrol with a consent reference; no photo: a person who uses a card or PIN."""
    argv = cityedge_argv(
        "faces",
        "enroll",
        *([str(ModelStore().asset(photo))] if photo else ["--no-face"]),
        "--id",
        person,
        "--name",
        name,
        "--config",
        str(site.config),
        "--consent-ref",
        f"hil-form-{person}",
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class CardReader:
    """The card reader simulator (a Wiegand reader behind a serial device server), reader lobby."""

    port: int
    control: int

    @property
    def source(self) -> str:
        """The gateway's ``card_reader`` source for it (a YAML list item, for ``sources``)."""
        return (
            f"  - {{type: card_reader, name: lobby, reader: lobby, transport: tcp, "
            f"host: 127.0.0.1, port: {self.port}}}\n"
        )

    def present(self, what: str, body: dict[str, Any]) -> None:
        """POST ``body`` to the simulator's ``what`` (card, keys, line)."""
        http_json(f"http://127.0.0.1:{self.control}/{what}", "POST", body)

    def wait_connected(self, timeout_s: float = 30) -> None:
        """Until the gateway's source is connected to the reader."""
        deadline = time.monotonic() + timeout_s
        while http_json(f"http://127.0.0.1:{self.control}/state")["clients"] < 1:
            assert time.monotonic() < deadline, "the card_reader source never connected"
            time.sleep(0.2)


def start_card_reader(procs: list[Proc], workdir: Path) -> CardReader:
    reader = CardReader(free_port(), free_port())
    start_simulator(procs, workdir, "card-reader", reader.port, reader.control)
    return reader


def start(site: GateSite, procs: list[Proc]) -> Proc:
    site.gateway = start_gateway(procs, site.dir, site.config, site.http_port)
    return site.gateway


def wait_access(sub: Subscriber, count: int, timeout_s: float) -> None:
    sub.wait_for(lambda: len(sub.of("access")) >= count, timeout_s, f"{count} access events")


# The gate screen in headless Chromium: every state the page shows, with the page's clock
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # a terminal's screen is always in front: a second page must not throttle the first's timers
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
SCREEN_RECORDER = """
window.__screen = [];
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("panel");
  const text = (id) => document.getElementById(id).textContent;
  const record = () => window.__screen.push({state: panel.dataset.state, zh: text("zh"),
    en: text("en"), name: text("name"), next: text("next"), t: Date.now()});
  record();
  new MutationObserver(record).observe(panel,
    {subtree: true, childList: true, attributes: true, characterData: true});
});
"""


def open_screen(browser: Browser, url: str) -> Page:
    """A page on the gate screen that records each state it shows in ``window.__screen``."""
    page = browser.new_page(viewport={"width": 800, "height": 480})
    page.add_init_script(SCREEN_RECORDER)
    page.goto(url)
    return page


def shown(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate("window.__screen"))


def wait_shown(page: Page, states: set[str], since: int = 0, timeout_s: float = 30) -> int:
    """Wait until the page shows one of ``states`` after its ``since``-th record; its index."""
    page.wait_for_function(
        "([since, states]) => window.__screen.slice(since).some(e => states.includes(e.state))",
        arg=[since, sorted(states)],
        timeout=timeout_s * 1000,
    )
    log = shown(page)
    return next(i for i in range(since, len(log)) if log[i]["state"] in states)
