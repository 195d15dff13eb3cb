"""``cityedge provision ...``: the technician's commands.

Exit codes (as every cityedge command, see :mod:`protocols.codes`): 0 done; 1 the input is
wrong (CE500: a bad hardware id, a name taken by another board, a file that is not firmware);
2 usage (an unknown option); 3 could not run (CE510: mpremote/esptool/the broker/balena failed;
CE003: the VM's port is in use); 4 everything was written but the self-test failed (CE520: the
node never reported). ``--json`` prints one JSON object on stdout (``ok``, and
``code``/``error``/``hint`` on failure); progress bars go to stderr.

Errors are raised (:mod:`provisioning.errors`); the root command prints them (``cityedge.console``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cityedge.console import console, emit_json
from protocols import nodewire
from protocols.errors import HintedError, port_error
from provisioning.errors import ProvisionInputError, ProvisionRunError

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
def _steps(as_json: bool, total_steps: int) -> Iterator[Callable[[str, float], None]]:
    """A progress bar on stderr (steps, and the share of the current step done). When stderr
    is not a terminal, one line per step once it is done (``done: check``): a step that fails
    leaves only its error."""
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not err_console.is_terminal,
        transient=False,
    ) as bar:
        task: TaskID = bar.add_task("start", total=total_steps)
        seen: list[str] = []

        def done(step: str) -> None:
            if bar.disable and not as_json:
                err_console.print(f"done: {step}")

        def progress(step: str, fraction: float) -> None:
            if step not in seen:
                if seen:
                    done(seen[-1])
                seen.append(step)
            bar.update(task, description=step, completed=len(seen) - 1 + min(fraction, 1.0))

        yield progress
        if seen:
            done(seen[-1])
        bar.update(task, completed=total_steps, description="done")


def _frame_text(frame: dict[str, Any]) -> str:
    """``StatusFrame seq 3, state running, version 1.0.0`` (not a Python dict)."""
    rest = "".join(f", {k} {frame[k]}" for k in ("state", "version") if k in frame)
    return f"{frame['type']} seq {frame['seq']}{rest}"


def _parse_sets(values: list[str]) -> dict[str, Any]:
    app: dict[str, Any] = {}
    for v in values:
        key, sep, raw = v.partition("=")
        if not sep or not key:
            raise ProvisionInputError(
                f"--set {v!r}: expected KEY=VALUE", hint="e.g. --set empty_mm=1100"
            )
        try:
            app[key] = json.loads(raw)
        except ValueError:
            app[key] = raw
    return app


@provision_app.command("init-site")
def init_site(
    site_dir: SiteDir,
    site: Annotated[str, typer.Option(help="Site id (a topic level), e.g. riverside")],
    broker_host: Annotated[str, typer.Option(help="Address nodes use to reach the site's broker")],
    broker_port: Annotated[int, typer.Option(help="Its TLS port")] = 8883,
    as_json: AsJson = False,
) -> None:
    """Create the site's CA, broker certificate, OTA key, technician identity and inventory."""
    from provisioning.site import Site

    try:
        s = Site.init(site_dir, site, broker_host, broker_port)
    except ValueError as err:
        raise ProvisionInputError(str(err)) from None
    doc = {
        "ok": True,
        "site": s.site,
        "dir": str(site_dir),
        "ota_kid": s.ota_kid,
        "broker_conf": str(site_dir / "broker" / "nodes.conf"),
    }
    if as_json:
        emit_json(doc)
    else:
        out.print(
            f"site {s.site} created in {site_dir}\n"
            f"  broker: add {site_dir / 'broker' / 'nodes.conf'} to mosquitto and reload it after each provisioning"
        )


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
        list[str] | None, typer.Option("--set", help="App setting KEY=VALUE (JSON values)")
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
    wait_s: Annotated[
        float | None,
        typer.Option(
            "--wait-s",
            help="Self-test: wait this many seconds for the node's first message (exit 4 if none)",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """From a box to a trusted node: certificate, config, image, inventory, ACL, flash or copy, self-test."""
    from provisioning.provision import NodeRequest, provision_node
    from provisioning.site import Site

    started = time.monotonic()
    site = Site.open(site_dir)
    req = NodeRequest(
        hwid=hwid,
        name=name,
        kind=kind,
        target=target,
        gateway=gateway,
        wifi_ssid=wifi_ssid,
        wifi_psk=wifi_psk,
        report_interval_s=interval_s,
        app=_parse_sets(set_ or []),
        firmware_file=firmware,
        port=port,
        copy_to=copy,
        self_test_s=wait_s,
    )
    steps = 7 + (1 if port or copy else 0) + (1 if wait_s is not None else 0)
    with _steps(as_json, steps) as progress:
        r = provision_node(site, req, progress)
    first = None
    if r.first_frame is not None:
        f = r.first_frame
        first = {"type": type(f).__name__, "seq": f.seq}
        if isinstance(f, nodewire.StatusFrame):
            first.update(state=f.state.name.lower(), version=".".join(map(str, f.version)))
    doc = {
        "ok": True,
        "created": r.created,
        "device": r.device.__dict__,
        "dir": str(r.out_dir),
        "image": str(r.image),
        "flash_image": str(r.merged) if r.merged else None,
        "label": str(r.label),
        "files": sorted(r.files),
        "steps": r.steps,
        "first_message": first,
        "seconds": round(time.monotonic() - started, 2),
    }
    if as_json:
        emit_json(doc)
        return
    verb = "provisioned" if r.created else f"re-provisioned (revision {r.device.revision})"
    out.print(f"{r.device.name} {verb}: hw {r.device.hwid}, identity {r.device.identity}")
    out.print(f"  image {r.image}" + (f", flash image {r.merged}" if r.merged else ""))
    out.print(
        f"  label {r.label}; reload the site broker so it reads {site_dir / 'broker' / 'acl'}",
        highlight=False,
    )
    if first is not None:
        out.print(f"  self-test: first message {_frame_text(first)}")


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
    as_json: AsJson = False,
) -> None:
    """A gateway's certificate for the nodes' broker, its ACL, its mqtt source block, its fleet."""
    from provisioning.provision import provision_gateway
    from provisioning.site import Site

    site = Site.open(site_dir)
    with _steps(as_json, 4) as progress:
        r = provision_gateway(
            site,
            hwid,
            name,
            fleet=fleet,
            balena_token=balena_token,
            balena_api=balena_api,
            progress=progress,
        )
    doc = {
        "ok": True,
        "created": r.created,
        "device": r.device.__dict__,
        "dir": str(r.out_dir),
        "balena": r.fleet.__dict__ | {"api_key": "***"} if r.fleet else None,
        "source_yaml": r.source_yaml,
    }
    if as_json:
        emit_json(doc)
        return
    out.print(f"gateway {name}: identity {r.device.identity}, files in {r.out_dir}")
    if r.fleet:
        out.print(f"  joined balena fleet {r.fleet.fleet} as {r.fleet.uuid}")
    out.print("  add to its site file under sources:\n" + r.source_yaml)


@provision_app.command("list")
def list_devices(site_dir: SiteDir, as_json: AsJson = False) -> None:
    """The inventory: every provisioned node and gateway."""
    from provisioning.site import Site

    inv = Site.open(site_dir).inventory()
    try:
        devices = inv.all()
    finally:
        inv.close()
    if as_json:
        emit_json({"ok": True, "devices": [d.__dict__ for d in devices]})
        return
    for d in devices:
        out.print(
            f"{d.name:<16} {d.role:<8} {d.kind:<11} {d.target:<6} hw {d.hwid}  "
            f"fw {d.firmware}  rev {d.revision}  {d.last_provisioned}"
        )


@provision_app.command("ota")
def ota(
    site_dir: SiteDir,
    version: Annotated[
        str,
        typer.Option("--firmware-version", help="New firmware version MAJOR.MINOR.PATCH"),
    ],
    target: Annotated[str, typer.Option(help="esp32, rp2 or unix")] = "esp32",
    valid_days: Annotated[int, typer.Option(help="Days the manifest stays valid")] = 30,
    node: Annotated[list[str] | None, typer.Option(help="Send to this node now (repeat)")] = None,
    as_json: AsJson = False,
) -> None:
    """Build and sign an update of the node firmware; with --node, send it over the site broker."""
    from provisioning import ota as ota_mod
    from provisioning.site import Site

    site = Site.open(site_dir)
    try:
        nodewire.parse_version(version)
    except ValueError as err:
        raise ProvisionInputError(str(err)) from None
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
    sent: dict[str, int] = {}
    for n in node or []:
        try:
            sent[n] = ota_mod.publish_update(
                upd,
                host=site.broker_host,
                port=site.broker_port,
                site=site.site,
                node=n,
                ca=str(site.root / "ca.pem"),
                cert=str(site.root / "technician.pem"),
                key=str(site.root / "technician.key"),
            )
        except (OSError, RuntimeError, ValueError) as err:
            raise ProvisionRunError(
                f"cannot send the update to {n}: {err}",
                hint="check the site broker is reachable",
            ) from err
    doc = {
        "ok": True,
        "version": version,
        "bundle": str(folder / f"{target}-{version}.bundle"),
        "size": len(upd.image),
        "sent_chunks": sent,
    }
    if as_json:
        emit_json(doc)
    else:
        out.print(
            f"update {version} ({len(upd.image)} bytes) signed with {site.ota_kid}; "
            f"sent to {sorted(sent) or 'no node'}"
        )


@provision_app.command("self-test")
def self_test_cmd(
    site_dir: SiteDir,
    name: Annotated[str, typer.Option(help="Node id")],
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Seconds to wait for its first message")
    ] = 60,
    as_json: AsJson = False,
) -> None:
    """Wait for a node's first authenticated message on the site broker (after it boots)."""
    from provisioning import selftest
    from provisioning.site import Site

    site = Site.open(site_dir)
    frame = selftest.wait_for_first_message(
        site.broker_host,
        site.broker_port,
        site.site,
        name,
        ca=site.root / "ca.pem",
        cert=site.root / "technician.pem",
        key=site.root / "technician.key",
        timeout_s=timeout_s,
    )
    doc: dict[str, Any] = {"ok": True, "node": name, "type": type(frame).__name__, "seq": frame.seq}
    if isinstance(frame, nodewire.StatusFrame):
        doc.update(state=frame.state.name.lower(), version=".".join(map(str, frame.version)))
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
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Once it listens, one JSON line on stdout: ok, image, port, connect (the URL)",
        ),
    ] = False,
) -> None:
    """A MicroPython VM (the unix port) on a LittleFS image, its REPL on a loopback port."""
    from provisioning.vm import VmBridge

    if not image.parent.is_dir():
        raise ProvisionInputError(f"cannot make {image}: no folder {image.parent}")
    url = f"socket://127.0.0.1:{port}"

    async def main() -> None:
        ready = asyncio.Event()
        serving = asyncio.create_task(VmBridge(image, port).serve(ready))
        listening = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if ready.is_set():
            if as_json:
                doc = {"ok": True, "image": str(image), "port": port, "connect": url}
                typer.echo(json.dumps(doc))
            else:
                err_console.print(f"MicroPython VM on {image}: mpremote connect {url}")
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


def register(app: typer.Typer) -> None:
    """Add ``cityedge provision ...`` to the root command (:mod:`cityedge.cli`)."""
    app.add_typer(provision_app, name="provision")
