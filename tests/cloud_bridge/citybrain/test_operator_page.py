"""The operator's page over real HTTP (aiohttp's test server) on a real SQLite store: nothing
before sign-in, wrong passwords refused and limited, the session cookie, CSRF, sign-out, the
event stream, the API's answers and its refusals; where the page may listen; the accounts file
and its command."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from cityedge.cli import app as cli
from cloud_bridge.citybrain.operator import auth
from cloud_bridge.citybrain.operator.app import PageOptions, make_app
from cloud_bridge.citybrain.operator.auth import (
    AccountError,
    Accounts,
    FailureLimiter,
    Sessions,
    hash_password,
    read_accounts,
    verify_password,
    write_account,
)
from cloud_bridge.citybrain.operator.feed import Feed
from cloud_bridge.citybrain.operator.server import OperatorSettings, check_listen
from cloud_bridge.citybrain.store import Batch, Incoming, Store, open_store
from cloud_bridge.citybrain.store.operator_common import OperatorReads, open_reads
from protocols import envelope as env
from protocols.errors import HintedError
from protocols.ids import Uuid7Generator
from protocols.session import GatewayState, LinkState

PASSWORD = "correct horse battery"
IDS = Uuid7Generator()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Page:
    client: TestClient[Any, Any]
    clock: FakeClock
    store: Store
    reads: OperatorReads
    feed: Feed
    sessions: Sessions
    accounts: Path


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    db = str(tmp_path / "ingest.db")
    store = await open_store(db)
    reads = await open_reads(db)
    accounts = tmp_path / "operators"
    write_account(accounts, "ops", PASSWORD)
    clock = FakeClock()
    feed = Feed(reads, poll_s=0.05, clock=clock)
    sessions = Sessions(clock, idle_s=600, max_age_s=3600)
    app = make_app(
        reads, feed, Accounts(accounts), sessions, FailureLimiter(clock, burst=3, refill_s=60)
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Page(client, clock, store, reads, feed, sessions, accounts)
    feed.close()
    await client.close()
    await reads.close()
    await store.close()


async def sign_in(
    p: Page, name: str = "ops", password: str = PASSWORD, **hdrs: str
) -> ClientResponse:
    return await p.client.post(
        "/login", data={"name": name, "password": password}, allow_redirects=False, headers=hdrs
    )


async def csrf_of(p: Page) -> str:
    return str((await (await p.client.get("/api/me")).json())["data"]["csrf"])


API = [
    "/api/me",
    "/api/overview",
    "/api/gateways",
    "/api/alarms/open",
    "/api/alarms/history",
    "/api/dead-letters",
    "/api/gaps",
    "/api/points?site=s&gateway=g",
    "/api/series?site=s&gateway=g&device=d&point=p",
    "/events",
]


async def seed(store: Store) -> None:
    now = datetime.now(UTC)
    e = env.AlarmEnvelope(
        id=IDS.new(int(now.timestamp() * 1000)),
        site="s",
        gateway="gw-secret-name",
        device="d",
        time=now,
        payload=env.AlarmPayload(
            rule="r",
            point="p",
            state=env.AlarmState.RAISED,
            severity=env.Severity.CRITICAL,
            value=2,
            limit=1,
            direction="above",
            since=now,
        ),
    )
    state = GatewayState(
        state=LinkState.ONLINE, site="s", gateway="gw-secret-name", session=1, time=now
    )
    await store.write(Batch(events=[Incoming(e, env.encode(e))], states=[state]), "w")


async def test_nothing_is_shown_or_streamed_before_sign_in(page: Page) -> None:
    await seed(page.store)
    resp = await page.client.get("/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    for path in API:
        resp = await page.client.get(path)
        assert resp.status == 401, path
        assert "gw-secret-name" not in await resp.text()
    login = await page.client.get("/login")
    text = await login.text()
    assert login.status == 200 and 'name="password"' in text and "gw-secret-name" not in text
    for asset in ("/static/operator.js", "/static/operator.css"):
        assert (await page.client.get(asset)).status == 200
    assert (await page.client.get("/static/../auth.py")).status == 404
    assert (await page.client.get("/static/login.html")).status == 404


async def test_a_wrong_password_or_an_unknown_name_gets_the_same_refusal(page: Page) -> None:
    for name, password in (("ops", "wrong password!"), ("nobody", PASSWORD), ("bad name", "x")):
        resp = await sign_in(page, name, password)
        assert resp.status == 401
        assert "Wrong name or password" in await resp.text()
        assert "Set-Cookie" not in resp.headers
    assert (await page.client.get("/api/me")).status == 401


async def test_sign_in_sets_a_strict_http_only_cookie_and_opens_the_page(page: Page) -> None:
    resp = await sign_in(page)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("cityedge-operator=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: a Secure cookie would not come back
    index = await page.client.get("/")
    assert index.status == 200 and "/static/operator.js" in await index.text()
    me = await (await page.client.get("/api/me")).json()
    assert me["data"]["name"] == "ops" and len(me["data"]["csrf"]) >= 40


async def test_with_tls_the_cookie_is_secure_and_host_only(page: Page) -> None:
    clock = FakeClock()
    app = make_app(
        page.reads,
        page.feed,
        Accounts(page.accounts),
        Sessions(clock),
        FailureLimiter(clock),
        PageOptions(tls=True),
    )
    client = TestClient(TestServer(app))  # plain HTTP here: the Set-Cookie line is checked
    await client.start_server()
    try:
        resp = await client.post(
            "/login", data={"name": "ops", "password": PASSWORD}, allow_redirects=False
        )
        assert resp.status == 303
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-cityedge-operator=") and "Secure" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Domain" not in cookie
    finally:
        await client.close()


async def test_failed_sign_ins_are_limited_then_allowed_again(page: Page) -> None:
    for _ in range(3):
        assert (await sign_in(page, password="wrong password!")).status == 401
    limited = await sign_in(page)  # even the right password waits
    assert limited.status == 429 and int(limited.headers["Retry-After"]) == 60
    assert "Too many attempts" in await limited.text()
    assert "Set-Cookie" not in limited.headers
    page.clock.now += 61
    assert (await sign_in(page)).status == 303


async def test_cross_site_posts_are_refused(page: Page) -> None:
    evil = await sign_in(page, Origin="https://evil.example")
    assert evil.status == 403
    assert (await sign_in(page, **{"Sec-Fetch-Site": "cross-site"})).status == 403
    assert (await sign_in(page, Origin="null")).status == 403
    opaque = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    assert (await sign_in(page, **opaque)).status == 403
    own = f"http://{page.client.host}:{page.client.port}"
    assert (await sign_in(page, Origin="null", **{"Sec-Fetch-Site": "same-origin"})).status == 303
    assert (await sign_in(page, Origin=own)).status == 303
    csrf = await csrf_of(page)
    refused = await page.client.post(
        "/logout",
        headers={"Origin": "https://evil.example", "X-CSRF-Token": csrf},
        allow_redirects=False,
    )
    assert refused.status == 403
    assert (await page.client.post("/logout", allow_redirects=False)).status == 403  # no token
    assert (await page.client.get("/api/me")).status == 200  # still signed in


async def test_sign_out_ends_the_session_and_its_event_stream(page: Page) -> None:
    await sign_in(page)
    stream = await page.client.get("/events")
    assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
    assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry: 2000\nevent: hello")
    csrf = await csrf_of(page)
    out = await page.client.post("/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    async with asyncio.timeout(5):
        assert await stream.content.readuntil(b"\n\n") == b"event: signed-out\ndata: {}\n\n"
        assert await stream.content.read() == b""  # the server closed it
    assert (await page.client.get("/api/me")).status == 401


async def test_an_idle_session_expires(page: Page) -> None:
    await sign_in(page)
    page.clock.now += 599
    assert (await page.client.get("/api/me")).status == 200  # use restarts the idle time
    page.clock.now += 599
    assert (await page.client.get("/api/me")).status == 200
    page.clock.now += 601
    assert (await page.client.get("/api/me")).status == 401


async def test_the_stream_says_which_section_changed(page: Page) -> None:
    await sign_in(page)
    await page.feed.check()
    stream = await page.client.get("/events")
    await stream.content.readuntil(b"\n\n")
    await seed(page.store)
    page.feed.on_batch(Batch(states=[]))  # nothing worth a look: no check
    assert await page.feed.check() == ["gateways", "alarms"]
    async with asyncio.timeout(5):
        msg = await stream.content.readuntil(b"\n\n")
    assert msg == b'event: changed\ndata: {"sections": ["alarms", "gateways"]}\n\n'
    stream.close()


async def test_the_api_answers_with_what_the_store_holds(page: Page) -> None:
    await seed(page.store)
    await sign_in(page)
    body = await (await page.client.get("/api/alarms/open")).json()
    (a,) = body["data"]
    assert (a["gateway"], a["severity"], a["value"], a["limit"]) == (
        "gw-secret-name",
        "critical",
        2,
        1,
    )
    assert datetime.fromisoformat(body["server_time"]) > datetime.now(UTC) - timedelta(minutes=1)
    gws = (await (await page.client.get("/api/gateways?state=online&q=secret")).json())["data"]
    assert gws["total"] == 1 and gws["rows"][0]["state"] == "online"
    overview = (await (await page.client.get("/api/overview")).json())["data"]
    assert overview["open_alarms"]["critical"] == 1 and overview["gateways"]["online"] == 1
    resp = await page.client.get("/api/alarms/open")
    assert resp.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/gateways?state=bogus",
        "/api/gateways?limit=0",
        "/api/gateways?limit=99999",
        "/api/gateways?offset=-1",
        "/api/points?site=s&gateway=a/b",
        "/api/points?site=s",
        "/api/series?site=s&gateway=g&device=d&point=%2B",
        "/api/series?site=s&gateway=g&device=d&point=p&minutes=0",
        "/api/series?site=s&gateway=g&device=d&point=p&until=yesterday",
        "/api/series?site=s&gateway=g&device=d&point=p&until=2026-01-01T00:00:00",
        "/api/alarms/history?site=s",
    ],
)
async def test_bad_query_parameters_are_a_400_with_the_reason(page: Page, path: str) -> None:
    await sign_in(page)
    resp = await page.client.get(path)
    assert resp.status == 400, path
    assert (await resp.json())["error"]


async def test_a_huge_or_broken_sign_in_form_is_refused(page: Page) -> None:
    huge = await page.client.post("/login", data={"name": "ops", "password": "x" * 10_000})
    assert huge.status in (400, 413)
    broken = await page.client.post("/login", data=b"\xff\xfe", headers={"Content-Type": "x/y"})
    assert broken.status == 400


@pytest.mark.parametrize(
    ("host", "tls", "insecure", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("127.3.4.5", False, False, False),
        ("::1", False, False, False),
        ("localhost", False, False, False),
        ("0.0.0.0", False, False, True),
        ("192.168.1.10", False, False, True),
        ("ops.example", False, False, True),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, False),
    ],
)
def test_the_page_listens_on_loopback_or_with_tls(
    tmp_path: Path, host: str, tls: bool, insecure: bool, refused: bool
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    settings = OperatorSettings(
        host, 8480, tmp_path / "a", cert if tls else None, key if tls else None, insecure
    )
    if refused:
        with pytest.raises(HintedError, match="without TLS") as err:
            check_listen(settings)
        assert err.value.code == "CE005" and "--operator-tls-cert" in (err.value.hint or "")
    else:
        warning = check_listen(settings)
        assert (warning is not None) == insecure
        if insecure:
            assert "WITHOUT TLS" in warning  # type: ignore[operator]


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(HintedError, match="go together"):
        check_listen(OperatorSettings("127.0.0.1", 1, tmp_path / "a", cert, None))
    with pytest.raises(HintedError, match="no such file"):
        check_listen(OperatorSettings("0.0.0.0", 1, tmp_path / "a", cert, tmp_path / "none"))


def test_passwords_are_scrypt_hashes_with_their_parameters() -> None:
    stored = hash_password(PASSWORD, ln=10)
    assert stored.startswith("$scrypt$ln=10,r=8,p=1$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)
    assert hash_password(PASSWORD, ln=10) != stored  # a new salt each time
    for broken in ("", "$scrypt$ln=99,r=8,p=1$AAAA$BBBB", stored[:-3], "plain", "$2b$12$x"):
        assert not verify_password(PASSWORD, broken)


def test_the_accounts_file_is_0600_and_its_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "operators"
    assert write_account(path, "alice", PASSWORD) is False
    assert write_account(path, "bob", PASSWORD + "2") is False
    assert write_account(path, "alice", PASSWORD + "3") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    accounts = read_accounts(path)
    assert sorted(accounts) == ["alice", "bob"] and verify_password(
        PASSWORD + "3", accounts["alice"]
    )
    with pytest.raises(AccountError, match="at least 12"):
        write_account(path, "carol", "short")
    with pytest.raises(AccountError, match="account name"):
        write_account(path, "bad name", PASSWORD)
    assert write_account(path, "bob", None) is True and sorted(read_accounts(path)) == ["alice"]
    text = path.read_text()
    for lines, error in (
        ("# c\nalice\n", ":2: expected NAME"),
        ("alice:plaintext\n", ":1: account 'alice' has no usable scrypt hash"),
        (text + text.splitlines()[-1] + "\n", "appears twice"),
    ):
        path.write_text(lines)
        with pytest.raises(AccountError, match=error):
            read_accounts(path)
    with pytest.raises(AccountError, match="no operator accounts file"):
        Accounts(tmp_path / "missing")
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(AccountError, match="has no account"):
        Accounts(tmp_path / "empty")


async def test_accounts_are_read_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "operators"
    write_account(path, "alice", PASSWORD)
    accounts = Accounts(path)
    assert await accounts.verify("alice", PASSWORD)
    assert not await accounts.verify("bob", PASSWORD)
    write_account(path, "bob", PASSWORD)
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
    assert await accounts.verify("bob", PASSWORD)
    path.write_text("garbage\n")  # a broken edit keeps the last good accounts
    assert await accounts.verify("alice", PASSWORD)


def test_the_limiter_forgets_the_oldest_keys_beyond_its_bound() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(clock, burst=1, refill_s=10, max_keys=2)
    limiter.failed("a")
    assert limiter.retry_after("a") == 10
    clock.now += 5
    assert limiter.retry_after("a") == pytest.approx(5)
    limiter.failed("b")
    limiter.failed("c")
    assert limiter.retry_after("a") == 0  # dropped (oldest) when the third key came


def test_operator_account_command_and_ingest_flag_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "ops"
    done = runner.invoke(
        cli,
        [
            "operator-account",
            "--accounts",
            str(path),
            "--name",
            "ops",
            "--password-stdin",
            "--json",
        ],
        input=PASSWORD + "\n",
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["done"] == "added"
    assert verify_password(PASSWORD, read_accounts(path)["ops"])
    short = runner.invoke(
        cli,
        ["operator-account", "--accounts", str(path), "--name", "x", "--password-stdin"],
        input="short\n",
    )
    assert short.exit_code == 1 and "CE005" in short.output and "Traceback" not in short.output
    for args, message in (
        (["--operator-listen", "0.0.0.0:8480", "--operator-accounts", str(path)], "without TLS"),
        (["--operator-listen", "127.0.0.1:8480"], "needs --operator-accounts"),
        (["--operator-accounts", str(path)], "needs --operator-listen"),
        (["--operator-listen", "127.0.0.1:99999", "--operator-accounts", str(path)], "host:port"),
        (
            ["--operator-listen", "127.0.0.1:8480", "--operator-accounts", str(tmp_path / "no")],
            "no operator accounts file",
        ),
    ):
        result = runner.invoke(cli, ["ingest", "--db", str(tmp_path / "i.db"), *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "i.db").exists()  # refused before anything was made
    assert auth.MIN_PASSWORD == 12
