"""Serving the operator's page: where it may listen, TLS, and its lifetime beside the ingest.

**Where it listens.** The page carries passwords and a session cookie: on a loopback address
(127.0.0.0/8, ::1, ``localhost``) it may be plain HTTP; on any other address it needs TLS
(``tls_cert`` and ``tls_key``), unless ``allow_insecure`` says otherwise explicitly — then a
warning is logged at every start. Behind a reverse proxy that terminates TLS, listen on loopback
(or use the override, and keep the proxy's network private).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from cloud_bridge.citybrain.operator.app import PageOptions, make_app
from cloud_bridge.citybrain.operator.auth import Accounts, FailureLimiter, Sessions
from cloud_bridge.citybrain.operator.feed import Feed
from cloud_bridge.citybrain.store import Batch
from cloud_bridge.citybrain.store.operator_common import OperatorReads
from protocols import codes
from protocols.errors import HintedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorSettings:
    host: str
    port: int
    accounts: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure: bool = False
    poll_s: float = 1.0
    idle_s: float = 30 * 60
    max_age_s: float = 12 * 3600
    query_timeout_s: float = 10.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8480`` for IPv6) -> (host, port)."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HintedError(
            f"--operator-listen {value!r}: expected host:port",
            hint="e.g. 127.0.0.1:8480 (loopback), or an address with --operator-tls-cert/-key",
            code=codes.BAD_VALUE,
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_listen(settings: OperatorSettings) -> str | None:
    """Refuse what would expose passwords; returns the warning to log for an override."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise HintedError(
            "--operator-tls-cert and --operator-tls-key go together",
            hint="give the certificate (PEM, with its chain) and its private key",
            code=codes.BAD_VALUE,
        )
    for option, path in (
        ("--operator-tls-cert", settings.tls_cert),
        ("--operator-tls-key", settings.tls_key),
    ):
        if path is not None and not path.is_file():
            raise HintedError(f"{option} {path}: no such file", code=codes.BAD_PATH)
    if settings.tls or is_loopback(settings.host):
        return None
    where = f"{settings.host}:{settings.port}"
    if not settings.allow_insecure:
        raise HintedError(
            f"refusing to serve the operator's page on {where} without TLS: passwords and "
            "session cookies would cross the network in clear",
            hint="give --operator-tls-cert and --operator-tls-key, listen on 127.0.0.1 behind "
            "a TLS proxy, or (on a private network you trust) --operator-insecure-listen",
            code=codes.BAD_VALUE,
        )
    return (
        f"the operator's page listens on {where} WITHOUT TLS (--operator-insecure-listen): "
        "passwords and session cookies cross the network in clear"
    )


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as err:
        raise HintedError(
            f"cannot use --operator-tls-cert {cert} / --operator-tls-key {key}: {err}",
            hint="PEM files: the certificate (with its chain) and its unencrypted private key",
            code=codes.BAD_PATH,
        ) from None
    return ctx


def validate(settings: OperatorSettings) -> str | None:
    """Everything that can be checked before the ingest starts: the address (TLS or
    loopback), the TLS files, the accounts file. Returns the override's warning, if any."""
    warning = check_listen(settings)
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls_context(settings.tls_cert, settings.tls_key)
    Accounts(settings.accounts)
    return warning


class OperatorPage:
    """The page's web server and its feed; :meth:`on_batch` is the ingest's hook."""

    def __init__(
        self,
        settings: OperatorSettings,
        reads: OperatorReads,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.reads = reads
        self.warning = check_listen(settings)
        self.accounts = Accounts(settings.accounts)
        self.feed = Feed(reads, poll_s=settings.poll_s, clock=clock)
        self.sessions = Sessions(clock, idle_s=settings.idle_s, max_age_s=settings.max_age_s)
        self.limiter = FailureLimiter(clock)
        self._ssl = (
            tls_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )
        self.app = make_app(
            reads,
            self.feed,
            self.accounts,
            self.sessions,
            self.limiter,
            PageOptions(tls=settings.tls, query_timeout_s=settings.query_timeout_s),
        )
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"{scheme}://{host}:{self.port}/"

    def on_batch(self, batch: Batch) -> None:
        self.feed.on_batch(batch)

    async def start(self) -> None:
        if self.warning:
            log.warning("%s", self.warning)
        await self.feed.check()
        self._feed_task = asyncio.create_task(self.feed.run(self._stop))
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.settings.host, self.settings.port, ssl_context=self._ssl
        )
        try:
            await site.start()
        except OSError as err:
            await self.close()
            raise HintedError(
                f"cannot serve the operator's page on {self.settings.host}:{self.settings.port}: "
                f"{err.strerror or err}",
                code=codes.PORT_IN_USE,
            ) from None
        sockets = getattr(site._server, "sockets", None) or []  # the bound port (0: any)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("operator page on %s (%d account(s))", self.url, len(self.accounts))

    async def close(self) -> None:
        self._stop.set()
        self.feed.close()  # open streams end now, not after the shutdown timeout
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
            self._feed_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
