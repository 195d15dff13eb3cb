"""The cloud side's commands: ``cityedge ingest``, ``cityedge broker-config``,
``cityedge command-key`` and ``cityedge command``.

Exit codes as for every ``cityedge`` command: 0 ok, 1 the input is wrong, 3 could not run
(broker or database unreachable, a refused command).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_bridge.link import LinkError, LinkSettings, TlsSettings

EXIT_INPUT, EXIT_RUNTIME = 1, 3

BrokerOpt = Annotated[str, typer.Option(help="Broker host:port")]
CaOpt = Annotated[Path | None, typer.Option(help="CA certificate of the broker (enables TLS)")]
CertOpt = Annotated[Path | None, typer.Option(help="Client certificate (PEM)")]
KeyOpt = Annotated[Path | None, typer.Option(help="Client certificate's private key (PEM)")]


def _link(
    broker: str, client_id: str, ca: Path | None, cert: Path | None, key: Path | None, **kw: Any
) -> LinkSettings:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        typer.echo(f"--broker {broker!r}: expected host:port, e.g. 127.0.0.1:1883", err=True)
        raise typer.Exit(EXIT_INPUT)
    tls = TlsSettings(ca_file=ca, cert_file=cert, key_file=key) if ca or cert else None
    return LinkSettings(host=host, port=int(port), client_id=client_id, tls=tls, **kw)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def ingest(
    broker: BrokerOpt = "127.0.0.1:1883",
    db: Annotated[
        str, typer.Option(help="postgresql://... or an SQLite file (the embedded default)")
    ] = "cityedge-ingest.db",
    group: Annotated[
        str, typer.Option(help="Shared-subscription group; workers of one group split the load")
    ] = "ingest",
    worker: Annotated[
        str | None, typer.Option(help="This worker's name (default host-pid)")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="MQTT client id (default ingest-<worker>); keep it stable")
    ] = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    status: Annotated[
        bool, typer.Option(help="Print what the database holds (JSON) and exit")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """The city brain's ingest: validate, dedupe and store every envelope; track gateways."""
    from cloud_bridge.ingest import Ingest, IngestSettings, default_worker
    from cloud_bridge.store import StoreError, dump, open_store

    _logging(log_level)
    name = worker or default_worker()
    settings = IngestSettings(
        link=_link(
            broker,
            client_id or f"ingest-{name}",
            ca,
            cert,
            key,
            clean_session=False,
            session_expiry_s=7 * 86_400,
            manual_ack=True,
            receive_maximum=1000,
            message_queue=2000,
        ),
        group=group or None,
        worker=name,
    )

    async def main() -> None:
        store = await open_store(db)
        try:
            if status:
                sys.stdout.write(dump(await store.summary()) + "\n")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            service = Ingest(settings, store)
            await service.run(stop)
            await service.check_gaps()
            logging.getLogger("cloud_bridge.ingest").info(
                "ingest %s stopped: %d stored, %d duplicates, %d dead letters",
                name,
                service.stored,
                service.duplicates,
                service.dead,
            )
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except StoreError as err:
        typer.echo(f"ingest: {err}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from None


def broker_config(
    site: Annotated[str, typer.Option(help="Site id")],
    gateway: Annotated[list[str], typer.Option(help="A gateway id (repeat for each)")],
    out: Annotated[Path, typer.Option(help="Folder for mosquitto.conf, ACL and certificates")],
    port: Annotated[int, typer.Option(help="TLS port for the gateways")] = 8883,
    brain_port: Annotated[
        int | None,
        typer.Option(help="TLS port for the city brain's clients (default: --port + 1)"),
    ] = None,
    server_name: Annotated[
        list[str] | None, typer.Option(help="Broker host name or address (repeat)")
    ] = None,
) -> None:
    """Write a mosquitto configuration with per-gateway client certificates and an ACL; a
    gateway's client id is its certificate's name, so none can take over another's."""
    from cloud_bridge.brokerconf import write_site_broker
    from protocols.errors import TopicError
    from protocols.topics import gateway_prefix

    try:
        for gw in gateway:
            gateway_prefix(site, gw)
    except TopicError as err:
        typer.echo(f"broker-config: {err}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    files = write_site_broker(
        out,
        site=site,
        gateways=gateway,
        port=port,
        brain_port=brain_port,
        server_names=server_name or ("localhost", "127.0.0.1"),
    )
    typer.echo(f"wrote {files.conf}; run: mosquitto -c {files.conf}")
    for gw, f in files.gateways.items():
        typer.echo(f"  gateway {gw} (port {files.port}): {f.cert} {f.key} (user {f.name})")
    if files.city_brain is not None:
        f = files.city_brain
        typer.echo(f"  city brain (port {files.brain_port}, ingest and command): {f.cert} {f.key}")


def command_key(
    out: Annotated[Path, typer.Option(help="Where to write the Ed25519 private key (PEM, 0600)")],
) -> None:
    """Make a command-signing key; prints the public key for the gateways' commands.keys."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocols.signed import b64url, public_key_raw

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    typer.echo(b64url(public_key_raw(key)))


def command(
    name: Annotated[str, typer.Argument(help="ping, config.get, config.apply, outbox.stats")],
    site: Annotated[str, typer.Option(help="Site of the gateway")],
    gateway: Annotated[str, typer.Option(help="The gateway")],
    signing_key: Annotated[Path, typer.Option(help="Ed25519 private key (PEM)")],
    kid: Annotated[str, typer.Option(help="Key id the gateways know the key by")],
    args: Annotated[str, typer.Option(help="Arguments as a JSON object")] = "{}",
    ttl_s: Annotated[int, typer.Option(help="Valid for this many seconds")] = 60,
    broker: BrokerOpt = "127.0.0.1:1883",
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for the reply")] = 10.0,
) -> None:
    """Sign a command, send it to a gateway and print its reply (JSON)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_bridge.link import MqttLink
    from protocols import commands, signed, topics

    try:
        arguments = json.loads(args)
        if not isinstance(arguments, dict):
            raise TypeError("--args must be a JSON object")
        private = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise TypeError(f"{signing_key} is not an Ed25519 key")
    except (OSError, ValueError, TypeError) as err:
        typer.echo(f"command: {err}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    request = commands.CommandRequest(
        id=f"cli-{secrets.token_hex(6)}", site=site, gateway=gateway, command=name, args=arguments
    )
    data = signed.sign(
        commands.encode_request(request),
        purpose="command",
        kid=kid,
        key=private,
        expires_at=int(time.time()) + ttl_s,
    )
    settings = _link(broker, f"cmd-{secrets.token_hex(4)}", ca, cert, key)

    async def main() -> commands.CommandReply:
        link = await MqttLink.open(settings)
        try:
            await link.subscribe(topics.command_reply_topic(site, gateway), qos=1)
            await link.publish(topics.command_request_topic(site, gateway), data)
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await link.receive()
                    reply = commands.decode_reply(msg.payload)
                    if reply.request == request.id:
                        return reply
        finally:
            await link.close()

    try:
        reply = asyncio.run(main())
    except (LinkError, TimeoutError) as err:
        typer.echo(f"command: no reply from {site}/{gateway}: {err or 'timed out'}", err=True)
        raise typer.Exit(EXIT_RUNTIME) from None
    typer.echo(reply.model_dump_json(indent=2))
    if not reply.ok:
        raise typer.Exit(EXIT_RUNTIME)


def register(app: typer.Typer, _simulate_app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("broker-config")(broker_config)
    app.command("command-key")(command_key)
    app.command("command")(command)
