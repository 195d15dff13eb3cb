"""The gate screen's feed and the enrolment API, served by aiohttp's test server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from edge.face_access.web import ScreenFeed, mask_name
from tests.edge.face_access.harness import TOKEN, Harness
from tests.edge.face_access.scenes import still

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCREEN_TOKEN = "scr-7c1e9a4b2d8f6e3a5b0c"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_routes(harness.app.routes)
    async with TestClient(TestServer(app)) as c:
        yield c


def form(person: str, name: str, image: bytes | None, keep: str = "0", **more: str) -> FormData:
    f = FormData(default_to_multipart=True)
    fields = {"id": person, "name": name, "keep_image_days": keep, "consent_ref": "form-7"}
    for k, v in (fields | more).items():
        f.add_field(k, v)
    if image is not None:
        f.add_field("image", image, filename="p.jpg", content_type="image/jpeg")
    return f


def photo(harness: Harness, file: str) -> bytes:
    return harness.app.service.models.asset(file).read_bytes()


async def test_pages_are_served_in_chinese_and_english(client: Client) -> None:
    r = await client.get("/faces/gate/screen")
    text = await r.text()
    assert r.status == 200 and "未识别" in text and "Not recognised" in text and "欢迎" in text
    for words in ("请使用对讲", "please use the intercom", "请眨眼", "Please blink", "请向左转头"):
        assert words in text, words
    assert "Other ways in" in text and "单独同意" in text  # the other ways in; the notice
    r = await client.get("/faces/gate/enroll")
    text = await r.text()
    assert r.status == 200 and "住户登记" in text and "confirm(" in text and "consent_ref" in text


async def test_enrol_search_list_and_erase_through_the_api(
    harness: Harness, client: Client
) -> None:
    home = {"building": "3", "unit": "2", "room": "1102"}
    r = await client.post(
        "/faces/gate/api/people",
        data=form("p-biden", "拜登", photo(harness, "biden.jpg"), "3", **home),
        headers=AUTH,
    )
    body = await r.json()
    assert r.status == 201, body
    assert body["id"] == "p-biden" and body["image_kept_until"] is not None and body["face"]
    r = await client.get("/faces/gate/api/people", headers=AUTH)
    people = {p["id"]: p for p in (await r.json())["people"]}
    assert set(people) == {"p-obama", "p-biden"} and people["p-biden"]["name"] == "拜登"
    b = people["p-biden"]
    assert (b["building"], b["unit"], b["room"], b["stale"]) == ("3", "2", "1102", False)
    assert b["consent"]["by"] == "self" and b["consent"]["reference"] == "form-7"
    assert set(harness.app.names) == {"p-obama", "p-biden"}  # the app reloaded its gallery
    for query, found in (("1102", ["p-biden"]), ("拜", ["p-biden"]), ("OBAMA", ["p-obama"])):
        r = await client.get("/faces/gate/api/people", params={"q": query}, headers=AUTH)
        assert [p["id"] for p in (await r.json())["people"]] == found, query
    r = await client.delete("/faces/gate/api/people/p-biden", headers=AUTH)
    assert r.status == 200
    assert set(harness.app.names) == {"p-obama"}
    r = await client.delete("/faces/gate/api/people/p-biden", headers=AUTH)
    body = await r.json()
    assert r.status == 404 and body["zh"] and body["code"] == "CE422"


async def test_an_existing_id_is_refused_unless_replacing_is_asked_for(
    harness: Harness, client: Client
) -> None:
    """Before: enrolling p-obama again silently replaced them."""
    r = await client.post(
        "/faces/gate/api/people",
        data=form("p-obama", "Someone Else", photo(harness, "biden.jpg")),
        headers=AUTH,
    )
    body = await r.json()
    assert r.status == 409 and body["code"] == "CE425" and "already enrolled" in body["error"]
    assert "替换" in body["zh"]
    assert harness.app.names["p-obama"] == "奥巴马 Obama"
    r = await client.post(
        "/faces/gate/api/people",
        data=form("p-obama", "Someone Else", photo(harness, "biden.jpg"), replace="on"),
        headers=AUTH,
    )
    assert r.status == 201 and (await r.json())["replaced"]
    assert harness.app.names["p-obama"] == "Someone Else"


async def test_the_same_face_under_another_id_asks_first(harness: Harness, client: Client) -> None:
    """Before: obama2.jpg enrolled as p-twin without a word, though p-obama is the same face."""
    r = await client.post(
        "/faces/gate/api/people",
        data=form("p-twin", "Twin", photo(harness, "obama2.jpg")),
        headers=AUTH,
    )
    body = await r.json()
    assert r.status == 409 and body["code"] == "CE426" and body["zh"]
    assert [m["id"] for m in body["same_face"]] == ["p-obama"]
    assert "p-twin" not in harness.app.names
    r = await client.post(
        "/faces/gate/api/people",
        data=form("p-twin", "Twin", photo(harness, "obama2.jpg"), allow_same_face="on"),
        headers=AUTH,
    )
    body = await r.json()
    assert r.status == 201 and [m["id"] for m in body["same_face"]] == ["p-obama"]
    log = harness.app.service.audit.path.read_text(encoding="utf-8").splitlines()[-1]
    assert '"same_face_as": ["p-obama"]' in log


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
        (lambda b: form("p-x", "X", b, consent_ref=""), 400, "no consent recorded"),
        (lambda b: form("p-x", "X", b, minor="on"), 400, "guardian's consent"),
        (
            lambda b: form("p-x", "X", b, minor="on", consent_by="guardian"),
            400,
            "guardian's consent",
        ),
        (lambda b: form("p-x", "X", b, room="1\n2"), 400, "room must be printable"),
    ],
)
async def test_bad_enrolments_are_refused_in_both_languages(
    harness: Harness, client: Client, data: Any, status: int, message: str
) -> None:
    r = await client.post(
        "/faces/gate/api/people", data=data(photo(harness, "biden.jpg")), headers=AUTH
    )
    body = await r.json()
    assert r.status == status and message in body["error"], body
    assert body["zh"] and not body["zh"].isascii(), body  # and in Chinese
    assert "p-x" not in harness.app.names


async def test_a_minor_with_a_guardian_and_a_resident_without_a_face(
    harness: Harness, client: Client
) -> None:
    r = await client.post(
        "/faces/gate/api/people",
        data=form(
            "p-kid",
            "小明",
            photo(harness, "biden.jpg"),
            minor="on",
            consent_by="guardian",
            guardian="王芳",
        ),
        headers=AUTH,
    )
    assert r.status == 201, await r.json()
    r = await client.post(
        "/faces/gate/api/people", data=form("p-card", "李四", None, no_face="on"), headers=AUTH
    )
    assert r.status == 201 and not (await r.json())["face"]
    r = await client.get("/faces/gate/api/people", headers=AUTH)
    people = {p["id"]: p for p in (await r.json())["people"]}
    assert people["p-kid"]["consent"] | {"at": 0} == {
        "by": "guardian",
        "minor": True,
        "guardian": "王芳",
        "reference": "form-7",
        "notice": "2025-06",
        "at": 0,
    }
    assert not people["p-card"]["face"] and not people["p-card"]["stale"]
    audit = harness.app.service.audit.path.read_text(encoding="utf-8")
    assert "王芳" not in audit and "小明" not in audit  # ids only in the audit log


async def test_the_api_needs_the_token(client: Client) -> None:
    assert (await client.get("/faces/gate/api/people")).status == 401
    assert (
        await client.get("/faces/gate/api/people", headers={"Authorization": "Bearer nope"})
    ).status == 401
    assert (await client.delete("/faces/gate/api/people/p-obama")).status == 401


@pytest.mark.parametrize("harness", [{"admin_token": None}], indirect=True)
async def test_without_a_token_http_enrolment_is_off(client: Client) -> None:
    r = await client.get("/faces/gate/api/people", headers=AUTH)
    assert r.status == 403 and "cityedge faces" in await r.text()


# -- the events stream ------------------------------------------------------------------------
async def next_event(r: Any, timeout_s: float = 10) -> tuple[str, dict[str, Any]]:
    """The next SSE event: (its name, or 'message'; its data)."""
    name = "message"
    while True:
        line = (await asyncio.wait_for(r.content.readline(), timeout_s)).decode()
        if line.startswith("event: "):
            name = line[7:].strip()
        elif line.startswith("data: "):
            return name, dict(json.loads(line[6:]))


async def next_state(r: Any) -> dict[str, Any]:
    while True:
        name, data = await next_event(r)
        if name == "message":
            return data


async def test_the_screen_feed_streams_decisions_once_and_masks_the_name(
    harness: Harness, client: Client
) -> None:
    r = await client.get("/faces/gate/events")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert (await next_state(r))["state"] == "idle"
    await harness.feed(still("obama2.jpg"))
    event = await next_state(r)
    assert (event["state"], event["name"], event["method"]) == ("granted", "奥*马 O***a", "face")
    assert event["show_s"] == 4.0 and "person" not in event  # no id on a public screen
    # a screen that connects after the decision is not told it
    late = await client.get("/faces/gate/events")
    assert (await next_state(late))["state"] == "idle"
    name, _ = await next_event(late, timeout_s=5)
    assert name == "heartbeat"  # and then only heartbeats: never the decision again
    name, _ = await next_event(late, timeout_s=5)
    assert name == "heartbeat"
    harness.app.screen.close()
    r.close()
    late.close()


async def test_a_decision_that_waited_longer_than_show_s_is_dropped(
    harness: Harness, client: Client
) -> None:
    """A message older than ``screen.show_s`` when its turn comes (a screen that stalled) is
    never shown late."""
    r = await client.get("/faces/gate/events")
    assert (await next_state(r))["state"] == "idle"
    clock = {"now": 0.0}
    harness.app.screen._now = lambda: clock["now"]  # published "long ago"
    harness.app.screen.publish({"state": "granted", "name": "X*"})
    harness.app.screen._now = __import__("time").monotonic
    harness.app.screen.publish({"state": "unknown"})
    assert (await next_state(r))["state"] == "unknown"
    r.close()


async def test_a_liveness_challenge_reaches_the_screen_as_sent(
    client: Client, harness: Harness
) -> None:
    """The contract with the liveness check: ``{"state": "challenge", "action": ...,
    "seconds_left": n}`` goes to the screen as it is (the page renders it)."""
    r = await client.get("/faces/gate/events")
    assert (await next_state(r))["state"] == "idle"
    for action, left in (("blink", 3), ("turn_left", 2), ("turn_right", 1)):
        sent = {"state": "challenge", "action": action, "seconds_left": left}
        harness.app.screen.publish(sent)
        assert await next_state(r) == sent
    r.close()


@pytest.mark.parametrize(
    "harness", [{"screen": {"tokens": {"lobby": SCREEN_TOKEN}, "loopback": False}}], indirect=True
)
async def test_the_events_stream_answers_401_without_the_terminals_token(
    client: Client,
) -> None:
    """Before: anyone on the network got the id and full name of everyone admitted."""
    for params, headers in (
        ({}, {}),
        ({"token": "scr-wrong-0000000000000000"}, {}),
        ({"token": SCREEN_TOKEN[:-1]}, {}),
        ({"token": "é" * 24}, {}),
        ({}, AUTH),  # the staff token is not a screen token
    ):
        r = await client.get("/faces/gate/events", params=params, headers=headers)
        assert r.status == 401, (params, headers)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.get("/faces/gate/events", params={"token": SCREEN_TOKEN})
    assert r.status == 200 and (await next_state(r))["state"] == "idle"
    r.close()
    r = await client.get("/faces/gate/events", headers={"Authorization": f"Bearer {SCREEN_TOKEN}"})
    assert r.status == 200
    r.close()


def test_a_closed_feed_tells_a_late_subscriber_at_once() -> None:
    feed = ScreenFeed()
    feed.close()
    assert feed.subscribe().get_nowait()[1]["state"] == "closed"


@pytest.mark.parametrize(
    ("name", "mode", "shown"),
    [
        ("张伟", "masked", "张*"),
        ("张小伟", "masked", "张*伟"),
        ("欧阳娜娜", "masked", "欧**娜"),
        ("李", "masked", "李"),
        ("Barack Obama", "masked", "B****k O***a"),
        ("奥巴马 Obama", "masked", "奥*马 O***a"),
        ("张小伟", "full", "张小伟"),
        ("张小伟", "none", None),
        ("   ", "masked", None),
    ],
)
def test_names_are_masked_by_the_documented_rule(name: str, mode: str, shown: str | None) -> None:
    assert mask_name(name, mode) == shown
