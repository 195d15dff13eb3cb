"""Pages for people are not served in plain HTTP beyond the machine: check-config refuses it,
and ``http.tls`` serves them over HTTPS with the files named."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from edge.config.site import HttpConfig, HttpTlsConfig, load_site
from edge.errors import ConfigError
from edge.http import TlsFilesError, tls_context
from protocols import pki
from sim.localsite import free_port
from tests.edge.face_access.test_cli import site

GATE_TLS = HttpTlsConfig(cert=Path("gate.crt"), key=Path("gate.key"))


def with_http(tmp_path: Path, http: str, apps: bool = True) -> Path:
    path = site(tmp_path)
    text = path.read_text(encoding="utf-8").replace("gateway: gw-1\n", f"gateway: gw-1\n{http}\n")
    if not apps:
        text = text[: text.index("apps:")]
    path.write_text(text, encoding="utf-8")
    return path


def make_cert(folder: Path) -> tuple[Path, Path, Path]:
    ca_key, ca = pki.make_ca("test ca")
    key, cert = pki.issue(ca_key, ca, "gate", client=False, server_names=["127.0.0.1"])
    paths = folder / "ca.pem", folder / "gate.crt", folder / "gate.key"
    paths[0].write_bytes(pki.cert_pem(ca))
    paths[1].write_bytes(pki.cert_pem(cert))
    paths[2].write_bytes(pki.key_pem(key))
    return paths


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.20.5", "gate.local", "::"])
def test_plain_http_beyond_this_machine_is_refused_with_a_face_app(
    tmp_path: Path, host: str
) -> None:
    """Before: the example served the screen (names) and the enrolment page (the staff token)
    in plain HTTP on 0.0.0.0."""
    path = with_http(tmp_path, f"http: {{host: '{host}'}}")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    (problem,) = info.value.problems
    assert "site.yaml:4: http.host" in problem and "/faces/gate/enroll" in problem
    assert "http.tls" in problem


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_is_fine_in_plain_http(tmp_path: Path, host: str) -> None:
    load_site(with_http(tmp_path, f"http: {{host: '{host}'}}"))


def test_without_pages_for_people_any_host_is_fine(tmp_path: Path) -> None:
    load_site(with_http(tmp_path, "http: {host: 0.0.0.0}", apps=False))


def test_tls_files_must_exist_and_then_the_lan_is_fine(tmp_path: Path) -> None:
    path = with_http(tmp_path, "http: {host: 0.0.0.0, tls: {cert: gate.crt, key: gate.key}}")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert [p.split(": ", 2)[1] for p in info.value.problems] == ["http.tls.cert", "http.tls.key"]
    make_cert(tmp_path)
    load_site(path)


async def test_the_endpoint_serves_https_with_the_certificate(tmp_path: Path) -> None:
    ca, _, _ = make_cert(tmp_path)
    config = HttpConfig(host="127.0.0.1", tls=GATE_TLS)
    server_ctx = tls_context(config, tmp_path)
    assert server_ctx is not None and server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(ca))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello")
    finally:
        await runner.cleanup()


def test_a_key_that_does_not_load_names_the_files(tmp_path: Path) -> None:
    make_cert(tmp_path)
    (tmp_path / "gate.key").write_text("not a key", encoding="utf-8")
    config = HttpConfig(tls=GATE_TLS)
    with pytest.raises(TlsFilesError, match=r"gate\.crt with .*gate\.key"):
        tls_context(config, tmp_path)
