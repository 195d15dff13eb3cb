"""The site file: one gateway's whole configuration, and :func:`load_site`.

Loading is two passes. The first is pure validation of each part against its model (pydantic,
``extra="forbid"``). The second is read-only and looks across parts: plug-in names are unique,
every device has one owner, and what an app refers to (a device, a point) exists — with "did you
mean" when it nearly does. Both passes report every problem with file and line, and neither
touches hardware or the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from edge.channel import Overflow
from edge.config.base import Catalog, CheckContext, Loc, PluginConfig, StrictModel
from edge.config.problems import problems_from_validation
from edge.config.yamlsrc import Problem, YamlDocument, load_yaml
from edge.errors import ConfigError
from edge.registry import AppConfig, SinkConfig, SourceConfig
from protocols.envelope import Ident


class HttpTlsConfig(StrictModel):
    cert: Path = Field(
        description="PEM certificate chain of the endpoint (relative to the site file)"
    )
    key: Path = Field(description="PEM private key of the certificate (relative to the site file)")


class HttpConfig(StrictModel):
    enabled: bool = Field(default=True, description="Serve /healthz and /metrics")
    host: str = Field(
        default="127.0.0.1",
        description="Address to listen on (0.0.0.0 for all); pages for people (the gate "
        "screen, enrolment) beyond this machine need tls",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port)")
    tls: HttpTlsConfig | None = Field(
        default=None, description="Serve HTTPS with this certificate and key (none: plain HTTP)"
    )

    @property
    def loopback_only(self) -> bool:
        """The endpoint is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False


class ChannelConfig(StrictModel):
    capacity: int = Field(ge=1, le=10_000_000, description="Items the channel holds at most")
    overflow: Overflow = Field(
        default=Overflow.BLOCK, description="When full: block, drop_newest or drop_oldest"
    )


class ChannelsConfig(StrictModel):
    readings: ChannelConfig = Field(
        default_factory=lambda: ChannelConfig(capacity=4096),
        description="Readings from all sources to the dispatcher",
    )
    app_inbox: ChannelConfig = Field(
        default_factory=lambda: ChannelConfig(capacity=1024),
        description="Each app's own queue of readings",
    )
    sink_outbox: ChannelConfig = Field(
        default_factory=lambda: ChannelConfig(capacity=4096),
        description="Each sink's own queue of envelopes",
    )
    frames: ChannelConfig = Field(
        default_factory=lambda: ChannelConfig(capacity=4, overflow=Overflow.DROP_NEWEST),
        description="Camera frames from all sources to the frame dispatcher",
    )
    app_frames: ChannelConfig = Field(
        default_factory=lambda: ChannelConfig(capacity=1, overflow=Overflow.DROP_NEWEST),
        description="Each app's own queue of camera frames (a busy app skips frames)",
    )


class SiteConfig(StrictModel):
    site: Ident = Field(
        description="Site id, e.g. 'riverside-station'; first topic level after the root"
    )
    gateway: Ident = Field(description="This gateway's id, unique within the site")
    description: str = Field(default="", description="Free text for people")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level printed"
    )
    http: HttpConfig = Field(default_factory=HttpConfig, description="Local HTTP endpoint")
    channels: ChannelsConfig = Field(
        default_factory=ChannelsConfig, description="Queue sizes and policies"
    )
    shutdown_flush_s: float = Field(
        default=10.0, ge=0, le=600, description="On SIGINT/SIGTERM, how long sinks may flush"
    )
    profiles_dirs: list[Path] = Field(
        default_factory=list,
        description="Folders with site device profiles (relative to this file)",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Where readings come from"
    )
    apps: list[AppConfig] = Field(
        default_factory=list, description="What turns readings into events"
    )
    sinks: list[SinkConfig] = Field(default_factory=list, description="Where envelopes go")


@dataclass
class LoadedSite:
    config: SiteConfig
    path: Path
    check: CheckContext
    catalog: Catalog
    doc: YamlDocument
    warnings: list[str] = field(default_factory=list)


def _cross_check(
    config: SiteConfig, check: CheckContext
) -> tuple[Catalog, list[tuple[Loc, str]], list[str]]:
    problems: list[tuple[Loc, str]] = []
    warnings: list[str] = []
    catalog = Catalog()
    names: dict[str, Loc] = {}
    parts: list[tuple[str, list[PluginConfig]]] = [
        ("sources", config.sources),
        ("apps", config.apps),
        ("sinks", config.sinks),
    ]
    for section, plugins in parts:
        for i, plugin in enumerate(plugins):
            if plugin.name in names:
                problems.append(((section, i, "name"), f"name {plugin.name!r} is already used"))
            names[plugin.name] = (section, i)
    for i, source in enumerate(config.sources):
        provided = source.catalog(check)
        problems.extend((("sources", i, *loc), msg) for loc, msg in provided.problems)
        catalog.incomplete |= provided.incomplete
        for device, points in provided.devices.items():
            if device in catalog.devices:
                problems.append(
                    (
                        ("sources", i),
                        f"device {device!r} is already provided by {catalog.owners[device]!r}",
                    )
                )
                continue
            catalog.devices[device] = points
            catalog.owners[device] = source.name
    for section, plugins in parts:
        for i, plugin in enumerate(plugins):
            problems.extend(((section, i, *loc), msg) for loc, msg in plugin.check(catalog))
    problems.extend(_http_problems(config, check))
    if not config.sinks:
        warnings.append("no sinks: events will be made but go nowhere")
    return catalog, problems, warnings


def _http_problems(config: SiteConfig, check: CheckContext) -> list[tuple[Loc, str]]:
    """Pages for people (names, an enrolment form and its token) are not served in plain HTTP
    beyond this machine; the certificate files exist."""
    http = config.http
    if not http.enabled:
        return []
    problems: list[tuple[Loc, str]] = []
    if http.tls is None and not http.loopback_only:
        pages = [page for app in config.apps for page in app.pages()]
        if pages:
            problems.append(
                (
                    ("http", "host"),
                    f"{http.host!r} serves {', '.join(pages)} beyond this machine in plain HTTP "
                    "(names and the staff token readable on the network): set http.tls "
                    "{cert, key}, or listen on 127.0.0.1 (a screen on the gateway itself)",
                )
            )
    if http.tls is not None:
        for name in ("cert", "key"):
            path = getattr(http.tls, name)
            full = path if path.is_absolute() else check.base_dir / path
            if not full.is_file():
                problems.append((("http", "tls", name), f"no such file: {full}"))
    return problems


def load_site(path: Path, *, env: dict[str, str] | None = None) -> LoadedSite:
    """Read, validate and cross-check a site file; :class:`ConfigError` lists every problem."""
    doc = load_yaml(path, env=env)
    problems: list[Problem] = list(doc.problems)
    config: SiteConfig | None = None
    if doc.data is not None and not isinstance(doc.data, dict):
        problems.append(
            Problem(doc.file, 1, (), "the site file must be a mapping of keys to values")
        )
    elif doc.data is not None:
        try:
            config = SiteConfig.model_validate(doc.data)
        except ValidationError as err:
            known = {p.loc for p in problems}  # an undefined ${VAR} is one problem, not two
            problems.extend(
                p for p in problems_from_validation(err, doc, SiteConfig) if p.loc not in known
            )
    if problems or config is None:
        raise ConfigError([str(p) for p in problems] or [f"{path}: nothing to load"])
    base_dir = path.resolve().parent
    check = CheckContext(
        base_dir=base_dir,
        profiles_dirs=tuple(d if d.is_absolute() else base_dir / d for d in config.profiles_dirs),
    )
    catalog, found, warnings = _cross_check(config, check)
    if found:
        raise ConfigError(
            [str(Problem(doc.file, doc.line_of(loc), loc, msg)) for loc, msg in found]
        )
    return LoadedSite(
        config=config, path=path, check=check, catalog=catalog, doc=doc, warnings=warnings
    )
