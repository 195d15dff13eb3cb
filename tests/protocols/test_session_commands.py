"""Births and deaths, command requests and replies, and the envelope's link field."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols import commands, session, signed
from protocols import envelope as env
from protocols.errors import DecodeError, EncodeError
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


def test_with_link_adds_the_link_to_the_stored_bytes() -> None:
    envelope = tele()
    raw = env.encode(envelope)
    sent = env.with_link(raw, 3, 7, 42)
    link = env.LinkInfo(session=3, seq=7, pos=42)
    assert env.decode(sent) == envelope.model_copy(update={"link": link})
    assert sent == raw[:-1] + b',"link":{"session":3,"seq":7,"pos":42}}'  # raw is not parsed again
    for args in ((b"[1]", 3, 7, 42), (raw + b"\n", 3, 7, 42), (raw, -1, 7, 42), (raw, 3, 0, 42)):
        with pytest.raises(EncodeError, match="cannot add link"):
            env.with_link(*args)


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


def test_the_request_id_of_a_refused_command_is_peeked_only_when_well_formed() -> None:
    def envelope(body: bytes) -> bytes:
        key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        return signed.sign(body, purpose="command", kid="k", key=key, expires_at=1)

    assert commands.peek_request_id(envelope(b'{"id":"r-1","command":"ping"}')) == "r-1"
    assert commands.peek_request_id(b'{"id":"r-2"}') == "r-2"  # not even signed
    for data in (
        envelope(b'{"id":"r 1"}'),  # not an id
        envelope(b'{"id":7}'),
        envelope(b"[1]"),
        b'{"body":"!!"}',  # not base64url
        b"[]",
        b"\xff",
        b"[" * 10_000,  # deeper than the limits: refused before parsing
    ):
        assert commands.peek_request_id(data) is None


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
