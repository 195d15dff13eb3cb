"""Births and deaths, command requests and replies, and the envelope's link field."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import commands, session
from protocols import envelope as env
from protocols.errors import DecodeError
from protocols.ids import Uuid7Generator

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def tele() -> env.TelemetryEnvelope:
    return env.TelemetryEnvelope(
        id=Uuid7Generator().new(1_795_000_000_000),
        site="s",
        gateway="g",
        device="d",
        time=NOW,
        payload=env.TelemetryPayload(readings=[env.PointValue(point="p", value=1)]),
    )


def test_link_is_absent_from_the_wire_until_set_and_decodes_when_spliced() -> None:
    raw = env.encode(tele())
    assert b'"link"' not in raw
    spliced = raw[:-1] + b',"link":{"session":3,"seq":7,"pos":42}}'
    assert env.decode(spliced).link == env.LinkInfo(session=3, seq=7, pos=42)


@pytest.mark.parametrize(
    ("link", "field"),
    [
        (b'{"session":3,"seq":0,"pos":1}', "link.seq"),
        (b'{"session":-1,"seq":1,"pos":1}', "link.session"),
        (b'{"session":1,"seq":1}', "link.pos"),
        (b'{"session":1,"seq":1,"pos":1,"x":1}', "link.x"),
        (b'"3/7/42"', "link"),
    ],
)
def test_bad_link_is_refused_naming_the_field(link: bytes, field: str) -> None:
    raw = env.encode(tele())[:-1] + b',"link":' + link + b"}"
    with pytest.raises(DecodeError, match=field.replace(".", r"\.")):
        env.decode(raw)


def test_state_round_trip_and_errors() -> None:
    birth = session.GatewayState(
        state=session.LinkState.ONLINE, site="s", gateway="g", session=4, time=NOW
    )
    assert session.decode_state(session.encode_state(birth)) == birth
    for bad, where in [
        (b"{}", "state"),
        (
            b'{"state":"up","site":"s","gateway":"g","session":1,"time":"2026-11-24T08:00:00Z"}',
            "state",
        ),
        (
            b'{"state":"online","site":"s/x","gateway":"g","session":1,"time":"2026-11-24T08:00:00Z"}',
            "site",
        ),
        (
            b'{"state":"online","site":"s","gateway":"g","session":1,"time":"2026-11-24T08:00:00"}',
            "time",
        ),
        (b"not json", "state message"),
    ]:
        with pytest.raises(DecodeError, match=where):
            session.decode_state(bad)


def test_command_request_and_reply_round_trip() -> None:
    req = commands.CommandRequest(id="r-1", site="s", gateway="g", command="ping", args={"a": 1})
    assert commands.decode_request(commands.encode_request(req)) == req
    reply = commands.CommandReply(
        request="r-1", site="s", gateway="g", ok=False, reason="expired", message="m", time=NOW
    )
    assert commands.decode_reply(commands.encode_reply(reply)) == reply
    for bad, where in [
        (b'{"id":"r 1","site":"s","gateway":"g","command":"ping"}', "id"),
        (b'{"id":"r","site":"s","gateway":"g","command":""}', "command"),
        (b'{"id":"r","site":"s","gateway":"g"}', "command"),
        (b'{"id":"r","site":"s","gateway":"g","command":"ping","args":[]}', "args"),
    ]:
        with pytest.raises(DecodeError, match=where):
            commands.decode_request(bad)


@given(st.binary(max_size=300))
def test_decoders_never_raise_anything_but_decode_error(data: bytes) -> None:
    for decode in (
        session.decode_state,
        session.decode_host,
        commands.decode_request,
        commands.decode_reply,
    ):
        with contextlib.suppress(DecodeError):
            decode(data)
