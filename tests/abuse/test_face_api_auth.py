"""The face API's token under abuse: the real ``face_access`` app served by aiohttp, asked to
list, enrol and erase with missing, empty, short, wrong-scheme, non-UTF-8 and huge
``Authorization`` headers; and the site file's ``admin_token`` refused by ``check-config`` when
it is empty (``GATE_ADMIN_TOKEN=``), short or a placeholder."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge.config.site import load_site
from edge.config.tokens import TOKEN_MIN_LENGTH
from edge.errors import ConfigError
from edge.vision.manifest import ModelStore
from protocols.signed import b64url, public_key_raw
from tests.edge.face_access.harness import TOKEN, Harness, config, make_harness

ROOT = Path(__file__).resolve().parents[2]
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def harness(tmp_path: Path, model_store: ModelStore) -> AsyncIterator[Harness]:
    async for h in make_harness(tmp_path, model_store, {}):
        yield h


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_routes(harness.app.routes)
    async with TestClient(TestServer(app)) as c:
        yield c


def enrolment() -> FormData:
    f = FormData()
    f.add_field("id", "p-mallory")
    f.add_field("name", "Mallory")
    f.add_field("image", b"\xff\xd8 not really a face", filename="m.jpg", content_type="image/jpeg")
    return f


# name, Authorization header (None: no header); every one is 401 on every route
REFUSED: list[tuple[str, str | None]] = [
    ("missing", None),
    ("empty", ""),
    ("scheme only", "Bearer"),
    ("scheme and a space", "Bearer "),
    ("the token without a scheme", TOKEN),
    ("another scheme", f"Basic {TOKEN}"),
    ("two spaces", f"Bearer  {TOKEN}"),
    ("a prefix of the token", f"Bearer {TOKEN[:-1]}"),
    ("the token and more", f"Bearer {TOKEN}x"),
    ("short", "Bearer t"),
    ("non-ASCII", f"Bearer {TOKEN[:-1]}é"),
    ("8000 characters", "Bearer " + "a" * 8000),
    ("two tokens", f"Bearer {TOKEN}, Bearer {TOKEN}"),
]


@pytest.mark.parametrize(("header"), [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_a_bad_authorization_header_is_refused_on_every_route(
    harness: Harness, client: Client, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    listed = await client.get("/faces/gate/api/people", headers=headers)
    enrolled = await client.post("/faces/gate/api/people", data=enrolment(), headers=headers)
    erased = await client.delete("/faces/gate/api/people/p-obama", headers=headers)
    assert [listed.status, enrolled.status, erased.status] == [401, 401, 401]
    assert listed.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert set(harness.app.names) == {"p-obama"}  # nothing enrolled, nothing erased


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer {TOKEN}  "])
async def test_the_right_token_with_the_bearer_scheme_is_let_in(
    client: Client, header: str
) -> None:
    r = await client.get("/faces/gate/api/people", headers={"Authorization": header})
    assert r.status == 200 and [p["id"] for p in (await r.json())["people"]] == ["p-obama"]


async def raw_status(client: Client, head: bytes) -> int:
    """The status line's code for a request written byte by byte (headers no client sends)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"GET /faces/gate/api/people HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1])


@pytest.mark.parametrize(
    ("head", "statuses"),
    [
        (b"Authorization: Bearer \xff\xfe\xfd\r\n", {401}),
        (b"Authorization: Bearer " + TOKEN.encode()[:-1] + b"\xc3\r\n", {401}),
        (b"Authorization: \xff" + TOKEN.encode() + b"\r\n", {401}),
        (b"Authorization: Bearer " + b"a" * 100_000 + b"\r\n", {400, 431}),
        (b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 4000) for i in range(100)), {400, 401, 431}),
    ],
    ids=[
        "non-UTF-8 token",
        "cut UTF-8",
        "non-UTF-8 scheme",
        "a 100 kB header",
        "400 kB of headers",
    ],
)
async def test_hostile_header_bytes_get_a_4xx_never_a_500(
    client: Client, head: bytes, statuses: set[int]
) -> None:
    assert await raw_status(client, head) in statuses
    assert await raw_status(client, b"Authorization: Bearer " + TOKEN.encode() + b"\r\n") == 200


BAD_TOKENS = {
    "empty (GATE_ADMIN_TOKEN= set but empty)": "",
    "short": "tok-123",
    "19 characters": "3f9a1c0d7e2b4a6f8c5",
    "a placeholder word": "changeme-changeme-changeme",
    "in angle brackets": "<your-admin-token-here>",
    "filler": "x" * 32,
    "one character": "t" * 24,
    "a run": "0123456789abcdefghijklmnop",
    "with spaces": "correct horse battery staple",
    "non-ASCII": "tök-3f9a1c0d7e2b4a6f8c5e",
}


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_check_config_refuses_empty_short_and_placeholder_tokens_with_the_rule(
    tmp_path: Path, token: str
) -> None:
    with pytest.raises(ValidationError, match=f"at least {TOKEN_MIN_LENGTH} characters"):
        config(tmp_path, admin_token=token)


def test_random_tokens_pass() -> None:
    for token in (secrets.token_hex(16), secrets.token_urlsafe(24), TOKEN):
        assert config(Path("/tmp"), admin_token=token).admin_token is not None


@pytest.mark.parametrize("secret", ["changeme-changeme", "x" * 16, "s" * 32, "<gateway secret>..."])
def test_a_placeholder_gateway_secret_is_refused(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ValidationError, match="a secret must be random"):
        config(tmp_path, secret=secret)


def test_the_community_gate_example_with_an_empty_token_fails_check_config() -> None:
    env = {
        "GATE_SECRET": secrets.token_hex(16),
        "GATE_ADMIN_TOKEN": "",
        "GATE_SCREEN_TOKEN": secrets.token_hex(16),
        "GATE_PASS_KEY": b64url(public_key_raw(Ed25519PrivateKey.generate())),
        "CITY_BRAIN_USER": "gw",
        "CITY_BRAIN_PASSWORD": "pw",
    }
    with pytest.raises(ConfigError) as info:
        load_site(ROOT / "examples" / "community-gate.yaml", env=env)
    (problem,) = info.value.problems
    assert "community-gate.yaml:40: apps[0].admin_token" in problem
    assert "it is empty" in problem and f"at least {TOKEN_MIN_LENGTH} characters" in problem
    load_site(
        ROOT / "examples" / "community-gate.yaml",
        env={**env, "GATE_ADMIN_TOKEN": secrets.token_hex(16)},
    )
