"""The cloud side's commands: ``cityedge ingest`` (and its operator's page),
``cityedge operator-account``, ``cityedge broker-config``, ``cityedge command-key`` and
``cityedge command``.

Exit codes and error codes as for every ``cityedge`` command (:mod:`protocols.codes`): 0 ok;
1 the input is wrong (CE002 a file, CE005 an argument, CE630 a key that is not Ed25519); 3 could
not run (CE600 the database, CE610 the broker, CE620 a refused command, CE621 no reply). Errors
are raised as :class:`~protocols.errors.HintedError`; the root command prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cityedge.console import emit_json
from cloud_bridge.heap import settle_heap
from cloud_bridge.link import LinkError, LinkSettings, TlsSettings
from protocols import codes
from protocols.errors import HintedError

if TYPE_CHECKING:
    from cloud_bridge.citybrain.ingest_nats import NatsSettings
    from cloud_bridge.citybrain.operator.server import OperatorPage, OperatorSettings

BrokerOpt = Annotated[str, typer.Option(help="Broker host:port")]
CaOpt = Annotated[Path | None, typer.Option(help="CA certificate of the broker (enables TLS)")]
CertOpt = Annotated[Path | None, typer.Option(help="Client certificate (PEM)")]
KeyOpt = Annotated[Path | None, typer.Option(help="Client certificate's private key (PEM)")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON on stdout)")]


def _link(
    broker: str, client_id: str, ca: Path | None, cert: Path | None, key: Path | None, **kw: Any
) -> LinkSettings:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HintedError(
            f"--broker {broker!r}: expected host:port",
            hint="e.g. 127.0.0.1:1883",
            code=codes.BAD_VALUE,
        )
    for option, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path is not None and not path.is_file():
            raise HintedError(f"{option} {path}: no such file", code=codes.BAD_PATH)
    tls = TlsSettings(ca_file=ca, cert_file=cert, key_file=key) if ca or cert else None
    return LinkSettings(host=host, port=int(port), client_id=client_id, tls=tls, **kw)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _logging(level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise HintedError(
            f"--log-level {level!r}: use one of {', '.join(LOG_LEVELS)}", code=codes.BAD_VALUE
        )
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
    operator_listen: Annotated[
        str | None,
        typer.Option(
            help="Serve the operator's page on host:port (e.g. 127.0.0.1:8480); an address "
            "other than loopback needs --operator-tls-cert/--operator-tls-key",
            rich_help_panel="Operator's page",
        ),
    ] = None,
    operator_accounts: Annotated[
        Path | None,
        typer.Option(
            help="Operator accounts (made by 'cityedge operator-account')",
            rich_help_panel="Operator's page",
        ),
    ] = None,
    operator_tls_cert: Annotated[
        Path | None,
        typer.Option(help="TLS certificate of the page (PEM)", rich_help_panel="Operator's page"),
    ] = None,
    operator_tls_key: Annotated[
        Path | None,
        typer.Option(help="Its private key (PEM)", rich_help_panel="Operator's page"),
    ] = None,
    operator_insecure_listen: Annotated[
        bool,
        typer.Option(
            help="Allow an address other than loopback without TLS (logs a warning)",
            rich_help_panel="Operator's page",
        ),
    ] = False,
    operator_only: Annotated[
        bool,
        typer.Option(
            help="Serve the page only, consume nothing (other workers ingest)",
            rich_help_panel="Operator's page",
        ),
    ] = False,
    pg_days_ahead: Annotated[
        int,
        typer.Option(
            help="PostgreSQL: events are partitioned by day; make today's and this many more "
            "ahead (at start and hourly)",
            rich_help_panel="PostgreSQL",
        ),
    ] = 7,
    pg_retention_days: Annotated[
        int,
        typer.Option(
            help="PostgreSQL: keep this many days of events (today counts), dropping older "
            "days' partitions whole; 0 keeps every day",
            rich_help_panel="PostgreSQL",
        ),
    ] = 0,
    pg_migrate: Annotated[
        bool,
        typer.Option(
            help="PostgreSQL: move an older cityedge's unpartitioned events table into the "
            "partitioned one (the old table is kept as events_unpartitioned)",
            rich_help_panel="PostgreSQL",
        ),
    ] = False,
    nats_servers: Annotated[
        str | None,
        typer.Option(
            "--nats",
            help="Consume from a NATS JetStream cluster instead of --broker: its nodes as "
            "nats://host:port,nats://host:port (workers of one --group share one durable "
            "consumer on the MQTT layer's stream $MQTT_msgs)",
            rich_help_panel="NATS cluster",
        ),
    ] = None,
    nats_user: Annotated[
        str | None,
        typer.Option(help="NATS user name", rich_help_panel="NATS cluster"),
    ] = None,
    nats_password_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the NATS user's password (its first line)",
            rich_help_panel="NATS cluster",
        ),
    ] = None,
    nats_ack_wait_s: Annotated[
        float,
        typer.Option(
            help="A message a worker took and did not acknowledge (it died) goes to another "
            "worker after this many seconds",
            rich_help_panel="NATS cluster",
        ),
    ] = 30.0,
) -> None:
    """The city brain's ingest: validate, dedupe and store every envelope; track gateways;
    serve the operator's page (--operator-listen)."""
    from cloud_bridge.citybrain.ingest import Ingest, IngestSettings, default_worker
    from cloud_bridge.citybrain.store import StoreError, dump, open_store, sqlite_path
    from cloud_bridge.citybrain.store.pg_partitions import PartitionOptions
    from cloud_bridge.citybrain.store.postgres import OldEventsTable

    if status:  # a read-only query: an existing database, nothing created
        pg = db.startswith(("postgresql://", "postgres://"))
        if not pg and not sqlite_path(db).is_file():
            raise HintedError(
                f"--status: no ingest database {sqlite_path(db)}",
                hint="check --db: the ingest creates the file when it runs, --status never does",
                code=codes.BAD_PATH,
            )
    page = _operator_settings(
        operator_listen,
        operator_accounts,
        operator_tls_cert,
        operator_tls_key,
        insecure=operator_insecure_listen,
        only=operator_only,
        status=status,
    )
    partitions = PartitionOptions(days_ahead=pg_days_ahead, retention_days=pg_retention_days)
    try:
        partitions.check()
    except ValueError as err:
        raise HintedError(
            f"--pg-days-ahead/--pg-retention-days: {err}",
            hint="e.g. --pg-days-ahead 7 --pg-retention-days 90",
            code=codes.BAD_VALUE,
        ) from None
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
    nats = _nats_settings(
        nats_servers, nats_user, nats_password_file, ca, cert, key, nats_ack_wait_s
    )
    if nats is not None:
        from cloud_bridge.citybrain.ingest_nats import GAP_WHY

        if not group or "." in group:
            raise HintedError(
                f"--group {group!r}: with --nats the group names a durable consumer, which "
                "cannot be empty or hold a '.'",
                hint="e.g. --group ingest",
                code=codes.BAD_VALUE,
            )

        settings = dataclasses.replace(settings, gap_why=GAP_WHY)

    async def main() -> None:
        store = await open_store(db, read_only=status, partitions=partitions, migrate=pg_migrate)
        try:
            if status:
                sys.stdout.write(dump(await store.summary()) + "\n")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            async with _operator_page(page, db) as operator:
                if operator_only:
                    await stop.wait()
                    return
                service = Ingest(settings, store)
                if operator is not None:
                    service.on_batch = operator.on_batch  # the page hears of a batch at once
                settle_heap()  # start-up done: its objects out of the collector's way
                if nats is None:
                    await service.run(stop)
                else:
                    from cloud_bridge.citybrain.ingest_nats import NatsIngest

                    await NatsIngest(service, nats).run(stop)
                await service.check_gaps()
            logging.getLogger("cloud_bridge.citybrain.ingest").info(
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
    except OldEventsTable as err:
        raise HintedError(str(err), hint=err.hint, code="CE601") from None
    except StoreError as err:
        raise HintedError(str(err), code="CE600") from None


def _nats_settings(
    servers: str | None,
    user: str | None,
    password_file: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    ack_wait_s: float,
) -> NatsSettings | None:
    """``--nats`` and its options, checked before anything starts (None: MQTT)."""
    if servers is None:
        for option, value in (("--nats-user", user), ("--nats-password-file", password_file)):
            if value is not None:
                raise HintedError(
                    f"{option} needs --nats nats://host:port,...", code=codes.BAD_VALUE
                )
        return None
    try:
        from cloud_bridge.citybrain.ingest_nats import NatsSettings
    except ImportError:
        raise HintedError(
            "--nats needs nats-py", hint="pip install 'cityedge[ingest]'", code=codes.BAD_VALUE
        ) from None
    urls = tuple(u.strip() for u in servers.split(",") if u.strip())
    for url in urls:
        scheme, _, where = url.partition("://")
        host, _, port = where.rpartition(":")
        if scheme not in ("nats", "tls") or not host or not port.isdigit():
            raise HintedError(
                f"--nats {url!r}: expected nats://host:port (comma-separated for several nodes)",
                hint="e.g. --nats nats://10.0.0.1:4222,nats://10.0.0.2:4222",
                code=codes.BAD_VALUE,
            )
    if not urls:
        raise HintedError(
            "--nats: no server given",
            hint="e.g. --nats nats://127.0.0.1:4222",
            code=codes.BAD_VALUE,
        )
    if ack_wait_s <= 0:
        raise HintedError("--nats-ack-wait-s must be above 0", code=codes.BAD_VALUE)
    password: str | None = None
    if password_file is not None:
        try:
            password = password_file.read_text().splitlines()[0]
        except (OSError, IndexError) as err:
            raise HintedError(
                f"cannot read --nats-password-file {password_file}: "
                f"{getattr(err, 'strerror', None) or 'empty file'}",
                code=codes.BAD_PATH,
            ) from None
    for option, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path is not None and not path.is_file():
            raise HintedError(f"{option} {path}: no such file", code=codes.BAD_PATH)
    return NatsSettings(
        urls,
        user=user,
        password=password,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        ack_wait_s=ack_wait_s,
    )


def _operator_settings(
    listen: str | None,
    accounts: Path | None,
    cert: Path | None,
    key: Path | None,
    *,
    insecure: bool,
    only: bool,
    status: bool,
) -> OperatorSettings | None:
    """The page's settings, checked before anything starts (None: no page)."""
    from cloud_bridge.citybrain.operator.server import OperatorSettings, parse_listen, validate

    given = [
        o
        for o, v in (
            ("--operator-accounts", accounts),
            ("--operator-tls-cert", cert),
            ("--operator-tls-key", key),
        )
        if v is not None
    ]
    given += [
        o for o, v in (("--operator-insecure-listen", insecure), ("--operator-only", only)) if v
    ]
    if listen is None:
        if given:
            raise HintedError(f"{given[0]} needs --operator-listen host:port", code=codes.BAD_VALUE)
        return None
    if status:
        raise HintedError("--status prints and exits: it serves no page", code=codes.BAD_VALUE)
    if accounts is None:
        raise HintedError(
            "--operator-listen needs --operator-accounts FILE: nobody may see the page unsigned",
            hint="make the file with 'cityedge operator-account --accounts FILE --name NAME'",
            code=codes.BAD_VALUE,
        )
    host, port = parse_listen(listen)
    settings = OperatorSettings(
        host, port, accounts, tls_cert=cert, tls_key=key, allow_insecure=insecure
    )
    validate(settings)
    return settings


@contextlib.asynccontextmanager
async def _operator_page(
    settings: OperatorSettings | None, db: str
) -> AsyncIterator[OperatorPage | None]:
    """The operator's page beside the ingest, on a read-only connection of its own."""
    if settings is None:
        yield None
        return
    from cloud_bridge.citybrain.operator.server import OperatorPage
    from cloud_bridge.citybrain.store.operator_common import open_reads

    reads = await open_reads(db)
    try:
        page = OperatorPage(settings, reads)
        await page.start()
        try:
            yield page
        finally:
            await page.close()
    finally:
        await reads.close()


def operator_account(
    accounts: Annotated[Path, typer.Option(help="The accounts file (made if missing, mode 0600)")],
    name: Annotated[str, typer.Option(help="The operator's sign-in name")],
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (its first line)")
    ] = False,
    remove: Annotated[bool, typer.Option(help="Remove the account instead")] = False,
    as_json: AsJson = False,
) -> None:
    """Add an operator account for the operator's page, set its password, or remove it; the
    password is kept as a scrypt hash."""
    from cloud_bridge.citybrain.operator.auth import write_account

    password: str | None = None
    if not remove:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt(
                f"Password for {name}", hide_input=True, confirmation_prompt=True
            )
    existed = write_account(accounts, name, password)
    if remove and not existed:
        raise HintedError(f"{accounts} has no account {name!r}", code=codes.BAD_VALUE)
    done = "removed" if remove else ("changed" if existed else "added")
    if as_json:
        emit_json({"ok": True, "accounts": str(accounts), "name": name, "done": done})
    else:
        typer.echo(f"{done} operator account {name} in {accounts}")


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
    engine: Annotated[
        str,
        typer.Option(
            help="mosquitto (one broker: mosquitto.conf and an ACL) or nats (a JetStream "
            "cluster: users and permissions to include in every node's configuration)"
        ),
    ] = "mosquitto",
    as_json: AsJson = False,
) -> None:
    """Write a broker configuration with per-gateway client certificates: each gateway may
    publish only below its own prefix and read only its own commands. mosquitto: a gateway's
    client id is its certificate's name, so none can take over another's. nats: each
    certificate maps to a NATS user with those permissions."""
    from cloud_bridge.citybrain.brokerconf import write_site_broker
    from protocols.errors import TopicError
    from protocols.topics import gateway_prefix

    if engine not in ("mosquitto", "nats"):
        raise HintedError(f"--engine {engine!r}: use mosquitto or nats", code=codes.BAD_VALUE)
    try:
        for gw in gateway:
            gateway_prefix(site, gw)
    except TopicError as err:
        raise HintedError(str(err), code=codes.BAD_VALUE) from None
    if engine == "nats":
        _nats_broker_config(out, site, gateway, server_name, as_json=as_json)
        return
    files = write_site_broker(
        out,
        site=site,
        gateways=gateway,
        port=port,
        brain_port=brain_port,
        server_names=server_name or ("localhost", "127.0.0.1"),
    )
    if as_json:
        gateways = {
            gw: {"cert": str(f.cert), "key": str(f.key), "user": f.name}
            for gw, f in files.gateways.items()
        }
        emit_json({"ok": True, "conf": str(files.conf), "gateways": gateways, "notes": files.notes})
        return
    typer.echo(f"wrote {files.conf}; run: mosquitto -c {files.conf}")
    for note in files.notes:
        typer.echo(f"  note: {note}", err=True)
    for gw, f in files.gateways.items():
        typer.echo(f"  gateway {gw} (port {files.port}): {f.cert} {f.key} (user {f.name})")
    if files.city_brain is not None:
        f = files.city_brain
        typer.echo(f"  city brain (port {files.brain_port}, ingest and command): {f.cert} {f.key}")


def _nats_broker_config(
    out: Path, site: str, gateways: list[str], server_names: list[str] | None, *, as_json: bool
) -> None:
    from cloud_bridge.citybrain.brokerconf import write_nats_auth

    files = write_nats_auth(
        out, site=site, gateways=gateways, server_names=server_names or ("localhost", "127.0.0.1")
    )
    if as_json:
        gateways_json = {
            gw: {"cert": str(f.cert), "key": str(f.key), "user": f"CN={f.name}"}
            for gw, f in files.gateways.items()
        }
        emit_json(
            {
                "ok": True,
                "auth": str(files.auth),
                "mqtt_tls": str(files.mqtt_tls),
                "ca": str(files.ca),
                "city_brain_password": str(files.brain_password),
                "gateways": gateways_json,
            }
        )
        return
    typer.echo(
        f"wrote {files.auth} and {files.mqtt_tls}; in every node's configuration: "
        f'include "{files.auth}" at the top, include "{files.mqtt_tls}" inside mqtt {{ }}'
    )
    for gw, f in files.gateways.items():
        typer.echo(f"  gateway {gw}: {f.cert} {f.key} (NATS user CN={f.name}, MQTT only)")
    typer.echo(
        f"  city brain: cityedge ingest --nats ... --nats-user city-brain "
        f"--nats-password-file {files.brain_password}"
    )


def command_key(
    out: Annotated[Path, typer.Option(help="Where to write the Ed25519 private key (PEM, 0600)")],
    as_json: AsJson = False,
) -> None:
    """Make a command-signing key; prints the public key for the gateways' commands.keys."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocols.signed import b64url, public_key_raw

    if out.exists():
        raise HintedError(
            f"{out} already exists: a key is never overwritten",
            hint="choose another --out, or move the old key away first",
            code=codes.BAD_PATH,
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = b64url(public_key_raw(key))
    if as_json:
        emit_json({"ok": True, "key": str(out), "public_key": public})
    else:
        typer.echo(public)


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
    except ValueError as err:
        raise HintedError(
            f"--args is not JSON: {err.msg} (column {err.colno})"
            if isinstance(err, json.JSONDecodeError)
            else "--args is not JSON",
            hint='e.g. --args \'{"key": "value"}\'',
            code=codes.BAD_VALUE,
        ) from None
    if not isinstance(arguments, dict):
        raise HintedError(
            "--args must be a JSON object", hint="e.g. --args '{}'", code=codes.BAD_VALUE
        )
    try:
        private = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    except OSError as err:
        raise HintedError(
            f"cannot read --signing-key {signing_key}: {(err.strerror or str(err)).lower()}",
            code=codes.BAD_PATH,
        ) from None
    except (ValueError, TypeError):
        raise HintedError(
            f"{signing_key} is not a PEM private key without a password", code="CE630"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise HintedError(f"{signing_key} is not an Ed25519 key", code="CE630")
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
        async with MqttLink.open(settings) as link:
            await link.subscribe(topics.command_reply_topic(site, gateway), qos=1)
            await link.publish(topics.command_request_topic(site, gateway), data)
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await link.receive()
                    reply = commands.decode_reply(msg.payload)
                    if reply.request == request.id:
                        return reply

    try:
        reply = asyncio.run(main())
    except TimeoutError:
        raise HintedError(
            f"no reply from {site}/{gateway} within {timeout_s:g} s", code="CE621"
        ) from None
    except LinkError as err:
        raise HintedError(str(err) or f"cannot reach the broker {broker}", code="CE610") from None
    typer.echo(reply.model_dump_json(indent=2))
    if not reply.ok:
        raise HintedError(
            f"{site}/{gateway} refused {name}: {reply.message or reply.reason}", code="CE620"
        )


def register(app: typer.Typer) -> None:
    """Add the city brain's commands to the root command (:mod:`cityedge.cli`)."""
    app.command("ingest")(ingest)
    app.command("operator-account")(operator_account)
    app.command("broker-config")(broker_config)
    app.command("command-key")(command_key)
    app.command("command")(command)
