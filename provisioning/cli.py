"""``cityedge provision ...``: the technician's commands.

Exit codes (as every cityedge command, see :mod:`protocols.codes`): 0 done; 1 the input is
wrong (CE500: a bad hardware id, a name taken by another board, a wrong app setting, a file that
is not firmware, an update for another target; CE004: no such serial device); 2 usage (an
unknown option); 3 could not run (CE510: mpremote/esptool/the broker/balena failed; CE003: the
VM's port is in use); 4 the work was done but its check failed (CE520: the node never reported,
or gave no verdict on an update in time; CE530: it refused an update or rolled it back).
Everything that can be checked is checked before anything is written, and a failed step
leaves no file, inventory row or ACL entry. ``--json`` prints one JSON object on stdout
(``ok``, and ``code``/``error``/``hint`` on failure); progress goes to stderr: a bar with what
it waits for on a terminal, one line per step (and per change of what it waits for) when
piped.

Errors are raised (:mod:`provisioning.errors`); the root command prints them (``cityedge.console``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from cityedge.console import Failed, console, emit_json
from protocols import nodewire
from protocols.errors import HintedError, port_error
from provisioning import image
from provisioning.errors import ProvisionInputError, ProvisionRunError
from provisioning.progress import Progress
from provisioning.sitebroker import Heard

# never hard-wrapped: paths and commands printed to be copied stay whole when piped
out = console()
err_console = console(stderr=True)
provision_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Provision sensor nodes and gateways: identity, images, flashing, inventory, OTA.",
)

SiteDir = Annotated[
    Path,
    typer.Option(
        "--site-dir", "-d", help="The site's provisioning folder", envvar="CITYEDGE_SITE_DIR"
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object on stdout")]


@contextmanager
def _steps(as_json: bool, total_steps: int) -> Iterator[Progress]:
    """Progress on stderr: on a terminal a bar (steps, the share of the current one done, and
    what it waits for); piped, one line per step once it is done (``done: check``) and one per
    change of what it waits for (never a line per tick). ``--json``: nothing."""
    with Bar(
        TextColumn("{task.description:<12}"),
        BarColumn(bar_width=24),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=err_console,
        disable=as_json or not err_console.is_terminal,
        transient=False,
    ) as bar:
        task: TaskID = bar.add_task("start", total=total_steps, detail="")
        seen: list[str] = []
        said = [""]
        piped = bar.disable and not as_json

        def progress(step: str, fraction: float, detail: str = "") -> None:
            if step not in seen:
                if seen and piped:
                    err_console.print(f"done: {seen[-1]}")
                seen.append(step)
            # piped: a line when what it waits for changes, not when a count in it does
            if piped and detail and re.sub(r"\d+", "#", detail) != said[0]:
                err_console.print(f"{step}: {detail}")
            said[0] = re.sub(r"\d+", "#", detail) if detail else said[0]
            done = len(seen) - 1 + min(max(fraction, 0.0), 1.0)
            bar.update(task, description=step, completed=min(done, total_steps), detail=detail)

        yield progress
        if seen and piped:
            err_console.print(f"done: {seen[-1]}")
        bar.update(task, completed=total_steps, description="done", detail="")


def _frame_text(frame: dict[str, Any]) -> str:
    """``StatusFrame seq 3, state running, version 1.0.0`` (not a Python dict)."""
    rest = "".join(f", {k} {frame[k]}" for k in ("state", "version") if k in frame)
    return f"{frame['type']} seq {frame['seq']}{rest}"


def _heard(h: Heard) -> dict[str, Any]:
    f = h.frame
    doc: dict[str, Any] = {"type": type(f).__name__, "seq": f.seq}
    if isinstance(f, nodewire.StatusFrame):
        doc.update(state=f.state.name.lower(), version=".".join(map(str, f.version)))
    return doc


def _label(lab: Any) -> dict[str, Any]:
    return {
        "svg": str(lab.svg),
        "png": str(lab.png),
        "payload": lab.payload,
        "qr_mm": lab.qr_mm,
        "module_mm": lab.module_mm,
        "quiet_zone_modules": 4,
        "width_mm": lab.width_mm,
        "height_mm": lab.height_mm,
    }


@provision_app.command("init-site")
def init_site(
    site_dir: SiteDir,
    site: Annotated[str, typer.Option(help="Site id (a topic level), e.g. riverside")],
    broker_host: Annotated[str, typer.Option(help="Address nodes use to reach the site's broker")],
    broker_port: Annotated[int, typer.Option(help="Its TLS port")] = 8883,
    label_url: Annotated[
        str | None,
        typer.Option(
            help="QR labels encode this https:// address ({site} {name} {hwid} {kind}); "
            "default: plain text"
        ),
    ] = None,
    broker_pid_file: Annotated[
        Path | None,
        typer.Option(
            help="Pid file of the site's mosquitto, which the tool then reloads (SIGHUP) after "
            "each change (default: the one of broker/mosquitto.conf; Debian's: "
            "/run/mosquitto/mosquitto.pid)"
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create the site's CA, broker certificate, OTA key, technician identity and inventory."""
    from provisioning.site import Site

    try:
        s = Site.init(
            site_dir,
            site,
            broker_host,
            broker_port,
            label_url=label_url,
            broker_pid_file=broker_pid_file,
        )
    except ValueError as err:
        raise ProvisionInputError(str(err)) from None
    broker = s.root / "broker"
    doc = {
        "ok": True,
        "site": s.site,
        "dir": str(s.root),
        "ota_kid": s.ota_kid,
        "broker_conf": str(broker / "nodes.conf"),
        "broker_standalone": str(broker / "mosquitto.conf"),
        "broker_pid_file": s.broker_pid_file,
        "notes": s.notes,
    }
    if as_json:
        emit_json(doc)
        return
    out.print(
        f"site {s.site} created in {s.root}\n"
        f"  broker: run mosquitto -c {broker / 'mosquitto.conf'} (the tool reloads it), or include "
        f"{broker / 'nodes.conf'} in yours (reload it after each provisioning)"
    )
    for note in s.notes:
        err_console.print(f"  note: {note}")


@provision_app.command("node")
def node(
    site_dir: SiteDir,
    hwid: Annotated[
        str, typer.Option(help="Hardware id: MAC address or machine.unique_id() in hex")
    ],
    name: Annotated[str, typer.Option(help="Node id, e.g. bin-17 (topic level, device name)")],
    kind: Annotated[str, typer.Option(help=f"One of {', '.join(nodewire.NODE_KINDS)}")],
    target: Annotated[
        str, typer.Option(help="esp32, rp2 or unix (the MicroPython unix port)")
    ] = "esp32",
    gateway: Annotated[str | None, typer.Option(help="Gateway that reads this node")] = None,
    wifi_ssid: Annotated[str | None, typer.Option(help="Wi-Fi network")] = None,
    wifi_psk: Annotated[
        str | None, typer.Option(help="Wi-Fi password", envvar="CITYEDGE_WIFI_PSK")
    ] = None,
    interval_s: Annotated[float, typer.Option("--interval-s", help="Seconds between reports")] = 60,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="App setting KEY=VALUE, checked against the app's settings (e.g. full_mm=150, "
            "pins.echo=19, calibration.ph=[[1500,7],[2030,4]])",
        ),
    ] = None,
    firmware: Annotated[
        Path | None, typer.Option(help="MicroPython .bin for the board (ESP32): makes flash.bin")
    ] = None,
    port: Annotated[
        str | None, typer.Option(help="Flash over this serial port with esptool")
    ] = None,
    copy: Annotated[
        str | None,
        typer.Option(
            help="Copy with mpremote onto this running board (e.g. /dev/ttyUSB0, socket://host:port)"
        ),
    ] = None,
    self_test: Annotated[
        bool,
        typer.Option(
            "--self-test",
            help="Then wait for the broker to take the new ACL and for the node's first report "
            "(exit 4 if none); default wait: twice --interval-s plus 30 s",
        ),
    ] = False,
    wait_s: Annotated[
        float | None,
        typer.Option(
            "--wait-s", help="Self-test with this deadline in seconds (implies --self-test)"
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """From a box to a trusted node: certificate, config, image, inventory, ACL, flash or copy, self-test."""
    from provisioning.provision import NodeRequest, provision_node
    from provisioning.selftest import default_wait_s
    from provisioning.site import Site

    started = time.monotonic()
    site = Site.open(site_dir)
    if wait_s is None and self_test:
        wait_s = default_wait_s(interval_s)
    req = NodeRequest(
        hwid=hwid,
        name=name,
        kind=kind,
        target=target,
        gateway=gateway,
        wifi_ssid=wifi_ssid,
        wifi_psk=wifi_psk,
        report_interval_s=interval_s,
        sets=set_ or [],
        firmware_file=firmware,
        port=port,
        copy_to=copy,
        self_test_s=wait_s,
    )
    steps = 6 + (2 if port or copy else 0) + (1 if wait_s is not None else 0)
    with _steps(as_json, steps) as progress:
        r = provision_node(site, req, progress)
    first = _heard(r.first) if r.first is not None else None
    doc = {
        "ok": r.self_test_error is None,
        "created": r.created,
        "device": r.device.__dict__,
        "dir": str(r.out_dir),
        "image": str(r.image),
        "flash_image": str(r.merged) if r.merged else None,
        "label": _label(r.label),
        "files": sorted(r.files),
        "steps": r.steps,
        "broker_reload": {"sent": r.reload.sent, "how": r.reload.how},
        "self_test": None if wait_s is None else ("ok" if first else "failed"),
        "first_message": first,
        "seconds": round(time.monotonic() - started, 2),
    }
    if r.self_test_error is not None:
        e = r.self_test_error
        raise Failed(e.code, e.message, {k: v for k, v in doc.items() if k != "ok"}, e.hint)
    if as_json:
        emit_json(doc)
        return
    verb = "provisioned" if r.created else f"re-provisioned (revision {r.device.revision})"
    out.print(f"{r.device.name} {verb}: hw {r.device.hwid}, identity {r.device.identity}")
    out.print(f"  image {r.image}" + (f", flash image {r.merged}" if r.merged else ""))
    lab = r.label
    out.print(
        f"  label {lab.svg}: {lab.width_mm:g} x {lab.height_mm:g} mm, QR {lab.qr_mm:g} mm at "
        f"{lab.module_mm:g} mm/module: print at 100 %"
    )
    out.print(f"  broker: {r.reload.how}")
    if first is not None:
        out.print(f"  self-test ok: first message {_frame_text(first)}")


@provision_app.command("gateway")
def gateway(
    site_dir: SiteDir,
    hwid: Annotated[str, typer.Option(help="Hardware id of the gateway (MAC address)")],
    name: Annotated[str, typer.Option(help="Gateway id, e.g. gw-1")],
    fleet: Annotated[str | None, typer.Option(help="balena fleet slug to join (org/fleet)")] = None,
    balena_token: Annotated[
        str | None, typer.Option(help="balena API token", envvar="BALENA_TOKEN")
    ] = None,
    balena_api: Annotated[
        str | None, typer.Option(help="balena API URL (openBalena)", envvar="BALENA_API_URL")
    ] = None,
    command_key_days: Annotated[
        int, typer.Option(help="Days the gateway's command key is valid (its nodes obey it)")
    ] = 365,
    as_json: AsJson = False,
) -> None:
    """A gateway's certificate for the nodes' broker, its ACL, its command key (delegated by
    the site), its mqtt source block, its fleet."""
    from provisioning.provision import provision_gateway
    from provisioning.site import Site

    site = Site.open(site_dir)
    with _steps(as_json, 5) as progress:
        r = provision_gateway(
            site,
            hwid,
            name,
            fleet=fleet,
            balena_token=balena_token,
            balena_api=balena_api,
            command_key_days=command_key_days,
            progress=progress,
        )
    doc = {
        "ok": True,
        "created": r.created,
        "device": r.device.__dict__,
        "dir": str(r.out_dir),
        "balena": r.fleet.__dict__ | {"api_key": "***"} if r.fleet else None,
        "source_yaml": r.source_yaml,
        "broker_reload": {"sent": r.reload.sent, "how": r.reload.how},
        "command_key": {"kid": r.command_kid, "expires_at": r.command_expires_at},
    }
    if as_json:
        emit_json(doc)
        return
    out.print(f"gateway {name}: identity {r.device.identity}, files in {r.out_dir}")
    out.print(f"  broker: {r.reload.how}")
    until = datetime.fromtimestamp(r.command_expires_at, UTC).date().isoformat()
    out.print(f"  command key {r.command_kid}, delegated by the site until {until}")
    if r.fleet:
        out.print(f"  joined balena fleet {r.fleet.fleet} as {r.fleet.uuid}")
    out.print("  add to its site file under sources:\n" + r.source_yaml)


def _when(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", "Z") if iso else "-"


def _table(rows: list[list[str]]) -> str:
    """Plain columns (the header first), as wide as their widest cell: the same lines on a
    terminal of any width and in a pipe."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@provision_app.command("list")
def list_devices(
    site_dir: SiteDir,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="First read the nodes' status on the site broker (firmware, state, last seen)",
        ),
    ] = False,
    window_s: Annotated[
        float, typer.Option("--window-s", help="With --refresh: listen this many seconds")
    ] = 3.0,
    as_json: AsJson = False,
) -> None:
    """The inventory: every provisioned node and gateway, what the nodes last said, and the
    self-test's verdict. Times are UTC."""
    from provisioning.observe import refresh as refresh_from_nodes
    from provisioning.site import Site

    site = Site.open(site_dir)
    heard: set[str] = set()
    if refresh:
        with _steps(as_json, 1) as progress:
            heard = refresh_from_nodes(site, window_s, progress)
    inv = site.inventory()
    try:
        devices = inv.all()
    finally:
        inv.close()
    if as_json:
        emit_json({"ok": True, "devices": [d.__dict__ for d in devices], "heard": sorted(heard)})
        return
    rows = [
        [
            "NAME",
            "ROLE",
            "KIND",
            "TARGET",
            "HARDWARE ID",
            "FIRMWARE",
            "STATE",
            "LAST SEEN (UTC)",
            "SELF-TEST",
            "REV",
            "PROVISIONED (UTC)",
        ]
    ]
    for d in devices:
        test = f"{d.self_test} {_when(d.self_test_at)}" if d.self_test else "-"
        rows.append(
            [
                d.name,
                d.role,
                d.kind,
                d.target,
                d.hwid,
                d.firmware,
                d.state or "-",
                _when(d.last_seen),
                test,
                str(d.revision),
                _when(d.last_provisioned),
            ]
        )
    out.print(_table(rows))
    if not devices:
        out.print("(no devices yet: cityedge provision node|gateway ...)")


@provision_app.command("ota")
def ota(
    site_dir: SiteDir,
    version: Annotated[
        str,
        typer.Option("--firmware-version", help="New firmware version MAJOR.MINOR.PATCH"),
    ],
    target: Annotated[
        str | None,
        typer.Option(help="esp32, rp2 or unix; with --node, the nodes' recorded target"),
    ] = None,
    valid_days: Annotated[int, typer.Option(help="Days the manifest stays valid")] = 30,
    node: Annotated[list[str] | None, typer.Option(help="Send to this node now (repeat)")] = None,
    wait_s: Annotated[
        float,
        typer.Option("--wait-s", help="Seconds to wait for each node's verdict (kept or not)"),
    ] = 300,
    as_json: AsJson = False,
) -> None:
    """Build and sign an update of the node firmware; with --node, send it over the site broker
    and wait for each node's verdict: refused, installed, kept or rolled back."""
    from provisioning import ota as ota_mod
    from provisioning.errors import SelfTestFailed, UpdateNotKept
    from provisioning.observe import learn
    from provisioning.site import Site
    from provisioning.sitebroker import open_session

    site = Site.open(site_dir)
    try:
        wanted = nodewire.parse_version(version)
    except ValueError as err:
        raise ProvisionInputError(str(err)) from None
    names = list(dict.fromkeys(node or []))
    inv = site.inventory()
    try:
        devices = [inv.by_name(n) for n in names]
    finally:
        inv.close()
    for n, d in zip(names, devices, strict=True):
        if d is None or d.role != "node":
            raise ProvisionInputError(
                f"no node {n!r} in the inventory of site {site.site}",
                hint="see 'cityedge provision list'",
            )
    targets = {d.target for d in devices if d is not None}
    if target is None:
        if not targets:
            raise ProvisionInputError(
                "which target is this update for?", hint="pass --target esp32, rp2 or unix"
            )
        if len(targets) > 1:
            raise ProvisionInputError(
                f"the nodes run different targets ({', '.join(sorted(targets))})",
                hint="send the update to the nodes of one target at a time",
            )
        target = targets.pop()
    else:
        image.target(target)
        other = [d for d in devices if d is not None and d.target != target]
        if other:
            raise ProvisionInputError(
                f"{other[0].name} runs the {other[0].target} target, not {target}: a build for "
                f"{target} would not run on it",
                hint=f"leave --target out (it is taken from the inventory) or pass --target {other[0].target}",
            )
    session = open_session(site, "ota") if names else None
    results: dict[str, dict[str, Any]] = {}
    try:
        if session is not None:
            # what the nodes run now (their retained status), before anything is written
            session.watch(site.site, names, ("status",))
            inv = site.inventory()
            try:
                drain = session.clock() + 1.0
                while (h := session.next(drain)) is not None:
                    learn(inv, h)
                running = {n: inv.by_name(n) for n in names}
            finally:
                inv.close()
            for n, d in running.items():
                if d is not None and nodewire.parse_version(d.firmware) >= wanted:
                    raise ProvisionInputError(
                        f"{n} runs firmware {d.firmware}: {version} is not newer (the node would "
                        "refuse it as a downgrade)",
                        hint="give the update a higher version",
                    )
        upd = ota_mod.build_update(
            version,
            target_name=target,
            key=site.ota_key(),
            kid=site.ota_kid,
            expires_at=int(time.time()) + valid_days * 86400,
        )
        folder = site.root / "updates"
        folder.mkdir(exist_ok=True)
        (folder / f"{target}-{version}.bundle").write_bytes(upd.image)
        (folder / f"{target}-{version}.manifest").write_bytes(upd.manifest)
        if session is not None:
            with _steps(as_json, len(names)) as progress:
                inv = site.inventory()
                try:
                    for n in names:
                        v = ota_mod.deliver(
                            session,
                            site.site,
                            n,
                            upd,
                            timeout_s=wait_s,
                            progress=progress,
                            inventory=inv,
                        )
                        results[n] = {
                            "verdict": v.outcome,
                            "running": v.running,
                            "reason": v.reason,
                            "chunks": v.chunks,
                        }
                finally:
                    inv.close()
    finally:
        if session is not None:
            session.close()
    doc = {
        "ok": all(r["verdict"] == "kept" for r in results.values()),
        "version": version,
        "target": target,
        "bundle": str(site.root / "updates" / f"{target}-{version}.bundle"),
        "size": len(upd.image),
        "nodes": results,
    }
    bad = {n: r for n, r in results.items() if r["verdict"] != "kept"}
    if bad:
        n, r = next(iter(bad.items()))
        details = {k: v for k, v in doc.items() if k != "ok"}
        if r["verdict"] in ("refused", "rolled-back"):
            raise Failed(
                UpdateNotKept.code,
                f"{n} {r['verdict']} update {version}: {r['reason']} (it runs {r['running']})",
                details,
                "a refusal names what is wrong (signature, version, size, corrupt); "
                "'no-memory' clears when sent again; a rollback means the build never reported "
                "healthy on that board",
            )
        raise Failed(
            SelfTestFailed.code,
            f"no verdict from {n} within {wait_s:.0f} s: {r['verdict']} ({r['reason']})",
            details,
            "check the node is online ('cityedge provision list --refresh'), then wait longer "
            "with --wait-s",
        )
    if as_json:
        emit_json(doc)
        return
    out.print(
        f"update {version} for {target} ({len(upd.image)} bytes) signed with {site.ota_kid}: {doc['bundle']}"
    )
    for n, r in results.items():
        out.print(f"  {n}: {r['verdict']} {r['running']} ({r['chunks']} chunks)")
    if not results:
        out.print("  sent to no node (--node NAME sends it)")


@provision_app.command("self-test")
def self_test_cmd(
    site_dir: SiteDir,
    name: Annotated[str, typer.Option(help="Node id")],
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout-s",
            help="Seconds to wait for the broker's ACL and the node's first report (default: "
            "twice its report interval plus 30 s)",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Wait until the site broker has the current ACL and the node reports (after it boots)."""
    from provisioning import selftest
    from provisioning.site import Site

    site = Site.open(site_dir)
    inv = site.inventory()
    try:
        dev = inv.by_name(name)
    finally:
        inv.close()
    if dev is None or dev.role != "node":
        raise ProvisionInputError(
            f"no node {name!r} in the inventory of site {site.site}",
            hint="see 'cityedge provision list'",
        )
    wait = timeout_s if timeout_s is not None else selftest.default_wait_s(dev.report_interval_s)
    reload = site.reload_broker()
    with _steps(as_json, 1) as progress:
        heard = selftest.run(
            site, name, timeout_s=wait, how_to_reload=reload.how, progress=progress
        )
    doc: dict[str, Any] = {"ok": True, "node": name, **_heard(heard)}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"{name} reported: {_frame_text(doc)}")


@provision_app.command("vm")
def vm(
    image: Annotated[Path, typer.Option(help="LittleFS image file (created blank if missing)")],
    port: Annotated[
        int, typer.Option(help="Loopback TCP port for mpremote socket://127.0.0.1:PORT")
    ],
    world: Annotated[
        Path | None,
        typer.Option(
            help="The simulated sensors, JSON (echo_us, adc_mv, pins by GPIO number), re-read "
            "while it runs; default IMAGE with .world.json (made if missing)"
        ),
    ] = None,
    heap: Annotated[
        str, typer.Option(help="The node's MicroPython heap (TLS needs 128K)")
    ] = "128K",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Once it listens, one JSON line on stdout: ok, image, port, connect (the URL)",
        ),
    ] = False,
) -> None:
    """A MicroPython board on this machine (the unix port on a LittleFS image), its REPL on a
    loopback port: mpremote copies onto it; it boots main.py from the image at start and after
    a reset (mpremote reset, as 'provision node --copy' does), printing what the node prints."""
    from provisioning.vm import VmBridge

    if not image.parent.is_dir():
        raise ProvisionInputError(f"cannot make {image}: no folder {image.parent}")
    url = f"socket://127.0.0.1:{port}"
    bridge = VmBridge(
        image, port, world=world, node_heap=heap, console=lambda line: _console_line(line)
    )

    async def main() -> None:
        ready = asyncio.Event()
        serving = asyncio.create_task(bridge.serve(ready))
        # a closed terminal (SIGHUP) or a kill (SIGTERM) stops it as Ctrl-C does: the VM's
        # MicroPython (in a session of its own) is stopped, never left running
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, serving.cancel)
        listening = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if ready.is_set():
            if as_json:
                doc = {"ok": True, "image": str(image), "port": port, "connect": url}
                typer.echo(json.dumps(doc))
            else:
                err_console.print(
                    f"MicroPython VM on {image}: mpremote connect {url}; sensors from {bridge.world}"
                )
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as err:
        if err.errno is None:  # the MicroPython unix port is not installed
            raise HintedError(str(err), code="CE101") from None
        if err.filename is None:
            raise port_error("127.0.0.1", port, "the VM's REPL", err) from None
        raise ProvisionRunError(
            f"cannot start the VM on {err.filename}: {(err.strerror or str(err)).lower()}"
        ) from None


def _console_line(line: bytes) -> None:
    """The board's serial console: what the node prints, on stderr as it comes."""
    sys.stderr.write(line.decode(errors="replace"))
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    """Add ``cityedge provision ...`` to the root command (:mod:`cityedge.cli`)."""
    app.add_typer(provision_app, name="provision")
