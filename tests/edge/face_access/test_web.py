"""The gate screen's feed and the enrolment API, served by aiohttp's test server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from tests.edge.face_access.harness import TOKEN, Harness
from tests.edge.face_access.scenes import still

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_routes(harness.app.routes)
    async with TestClient(TestServer(app)) as c:
        yield c


def form(person: str, name: str, image: bytes | None, keep: str = "0") -> FormData:
    f = FormData()
    f.add_field("id", person)
    f.add_field("name", name)
    f.add_field("keep_image_days", keep)
    if image is not None:
        f.add_field("image", image, filename="p.jpg", content_type="image/jpeg")
    return f


async def test_pages_are_served_in_chinese_and_english(
    client: TestClient[web.Request, web.Application],
) -> None:
    r = await client.get("/faces/gate/screen")
    text = await r.text()
    assert r.status == 200 and "未识别" in text and "Not recognised" in text and "欢迎" in text
    r = await client.get("/faces/gate/enroll")
    assert r.status == 200 and "人脸登记" in await r.text()


async def test_enrol_list_and_erase_through_the_api(
    harness: Harness, client: TestClient[web.Request, web.Application]
) -> None:
    biden = harness.app.service.models.asset("biden.jpg").read_bytes()
    r = await client.post(
        "/faces/gate/api/people", data=form("p-biden", "拜登", biden, "3"), headers=AUTH
    )
    body = await r.json()
    assert r.status == 201, body
    assert body["id"] == "p-biden" and body["image_kept_until"] is not None
    r = await client.get("/faces/gate/api/people", headers=AUTH)
    people = {p["id"]: p for p in (await r.json())["people"]}
    assert set(people) == {"p-obama", "p-biden"} and people["p-biden"]["name"] == "拜登"
    assert not people["p-biden"]["stale"]
    assert set(harness.app.names) == {"p-obama", "p-biden"}  # the app reloaded its gallery
    r = await client.delete("/faces/gate/api/people/p-biden", headers=AUTH)
    assert r.status == 200
    assert set(harness.app.names) == {"p-obama"}
    r = await client.delete("/faces/gate/api/people/p-biden", headers=AUTH)
    assert r.status == 404


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (lambda b: form("p-x", "X", None), 400, "missing image"),
        (lambda b: form("", "X", b), 400, "missing id"),
        (lambda b: form("p-x", "X", b"not an image"), 400, "not an image"),
        (lambda b: form("bad id!", "X", b), 400, "not allowed"),
        (lambda b: form("unknown", "X", b), 400, "not allowed"),
        (lambda b: form("p-x", "X", b, "400"), 400, "0-30 days"),
        (lambda b: form("p-x", "X", b, "two"), 400, "whole number"),
    ],
)
async def test_bad_enrolments_are_refused_with_a_reason(
    harness: Harness,
    client: TestClient[web.Request, web.Application],
    data: object,
    status: int,
    message: str,
) -> None:
    image = harness.app.service.models.asset("biden.jpg").read_bytes()
    r = await client.post("/faces/gate/api/people", data=data(image), headers=AUTH)  # type: ignore[operator]
    body = await r.json()
    assert r.status == status and message in body["error"], body


async def test_the_api_needs_the_token(client: TestClient[web.Request, web.Application]) -> None:
    assert (await client.get("/faces/gate/api/people")).status == 401
    assert (
        await client.get("/faces/gate/api/people", headers={"Authorization": "Bearer nope"})
    ).status == 401
    assert (await client.delete("/faces/gate/api/people/p-obama")).status == 401


@pytest.mark.parametrize("harness", [{"admin_token": None}], indirect=True)
async def test_without_a_token_http_enrolment_is_off(
    client: TestClient[web.Request, web.Application],
) -> None:
    r = await client.get("/faces/gate/api/people", headers=AUTH)
    assert r.status == 403 and "cityedge faces" in await r.text()


async def test_the_screen_feed_streams_decisions(
    harness: Harness, client: TestClient[web.Request, web.Application]
) -> None:
    r = await client.get("/faces/gate/events")
    assert r.headers["Content-Type"].startswith("text/event-stream")

    async def next_event() -> dict[str, object]:
        while True:
            line = (await asyncio.wait_for(r.content.readline(), 10)).decode()
            if line.startswith("data: "):
                return dict(json.loads(line[6:]))

    assert (await next_event())["state"] == "idle"
    await harness.feed(still("obama2.jpg"))
    event = await next_event()
    assert (
        event["state"] == "granted"
        and event["name"] == "奥巴马 Obama"
        and event["person"] == "p-obama"
    )
    harness.app.screen.close()
    r.close()
