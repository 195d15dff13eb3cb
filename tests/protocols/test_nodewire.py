"""The node wire format: golden vectors (shared with the firmware), malformed frames, round
trips and fuzzing."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import nodewire
from protocols.errors import DecodeError, EncodeError, TopicError
from protocols.nodewire import NodeState, ReadingsFrame, ReplyFrame, Result, StatusFrame
from tests.firmware import vectors

DOC = json.loads((vectors.DIR / "nodewire.json").read_text())


def test_vectors_are_current() -> None:
    """The committed vectors are what the code makes (regenerate: python -m tests.firmware.vectors --write)."""
    for name, doc in vectors.build().items():
        assert (vectors.DIR / name).read_text() == vectors.render(doc), name


def test_rfc8032_test_1_is_the_published_signature() -> None:
    rfc = json.loads((vectors.DIR / "signed.json").read_text())["rfc8032"][0]
    assert rfc["public"] == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert rfc["signature"] == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_point_table_matches_the_vectors() -> None:
    assert DOC["points"] == nodewire.POINT_IDS


def test_first_readings_vector_byte_by_byte() -> None:
    want = bytes.fromhex(
        "ce 01 01 0001 6b0527e0 03 01 04 422a0000 02 02 0280 03 04 41940000".replace(" ", "")
    )
    assert DOC["readings"][0]["hex"] == want.hex()
    frame = nodewire.decode(want)
    assert frame == ReadingsFrame(
        1,
        1_795_500_000,
        (
            nodewire.NodeReading("fill_pct", 42.5, "%"),
            nodewire.NodeReading("distance_mm", 640, "mm"),
            nodewire.NodeReading("temperature_c", 18.5, "°C"),
        ),
    )
    for cut in range(len(want)):
        with pytest.raises(DecodeError):
            nodewire.decode(want[:cut])
    with pytest.raises(DecodeError, match="1 bytes after the last reading"):
        nodewire.decode(want + b"\x00")


@pytest.mark.parametrize("v", DOC["readings"], ids=lambda v: v["name"])
def test_readings_vectors(v: dict[str, object]) -> None:
    data = bytes.fromhex(str(v["hex"]))
    frame = nodewire.decode(data)
    assert isinstance(frame, ReadingsFrame)
    assert (frame.seq, frame.time) == (v["seq"], v["time"])
    assert [[r.point, r.value] for r in frame.readings] == v["readings"]
    assert nodewire.encode(frame) == data


@pytest.mark.parametrize("v", DOC["status"], ids=lambda v: v["name"])
def test_status_vectors(v: dict[str, object]) -> None:
    data = bytes.fromhex(str(v["hex"]))
    frame = nodewire.decode(data)
    assert isinstance(frame, StatusFrame)
    assert (frame.state, list(frame.version), frame.reason) == (
        v["state"],
        v["version"],
        v["reason"],
    )
    assert nodewire.encode(frame) == data


@pytest.mark.parametrize("v", DOC["reply"], ids=lambda v: v["name"])
def test_reply_vectors(v: dict[str, object]) -> None:
    data = bytes.fromhex(str(v["hex"]))
    frame = nodewire.decode(data)
    assert isinstance(frame, ReplyFrame)
    assert (frame.nonce, frame.result, frame.message) == (v["nonce"], v["result"], v["message"])
    assert nodewire.encode(frame) == data


@pytest.mark.parametrize("v", DOC["malformed"], ids=lambda v: v["name"])
def test_malformed_frames_are_refused(v: dict[str, str]) -> None:
    with pytest.raises(DecodeError):
        nodewire.decode(bytes.fromhex(v["hex"]))


def test_encode_refuses_what_cannot_go_on_the_wire() -> None:
    for readings in ([], [("nope", 1)], [("fill_pct", 2**40)], [("fill_pct", float("inf"))]):
        with pytest.raises(EncodeError):
            nodewire.encode_readings(1, 0, readings)
    with pytest.raises(EncodeError):
        nodewire.encode_status(1, 0, NodeState.BOOT, (1, 0, 0), "x" * 65)
    with pytest.raises(EncodeError):
        nodewire.encode_readings(70_000, 0, [("fill_pct", 1)])
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
        nodewire.parse_version("1.2")


def test_topics() -> None:
    assert (
        nodewire.node_topic("riverside", "bin-17", "up") == "cityedge/node/v1/riverside/bin-17/up"
    )
    assert nodewire.parse_node_topic("cityedge/node/v1/riverside/bin-17/ota/data") == (
        "riverside",
        "bin-17",
        "ota/data",
    )
    for bad in (
        "cityedge/v1/a/b/up",
        "cityedge/node/v1/a/b/nope",
        "cityedge/node/v1/a/+/up",
        "cityedge/node/v1/a",
    ):
        with pytest.raises(TopicError):
            nodewire.parse_node_topic(bad)
    with pytest.raises(TopicError):
        nodewire.node_topic("a", "b/c", "up")


def test_site_filter_is_one_channel_of_every_node() -> None:
    assert nodewire.site_filter("riverside", "up") == "cityedge/node/v1/riverside/+/up"
    assert nodewire.site_filter("riverside", "ota/data") == "cityedge/node/v1/riverside/+/ota/data"
    with pytest.raises(TopicError, match="site"):
        nodewire.site_filter("river/side", "up")
    with pytest.raises(TopicError, match="channel"):
        nodewire.site_filter("riverside", "down")


values = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)
readings_st = st.lists(
    st.tuples(st.sampled_from(sorted(nodewire.POINT_IDS)), values), min_size=1, max_size=32
)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), readings_st)
def test_readings_round_trip(
    seq: int, time: int, readings: list[tuple[str, nodewire.Value]]
) -> None:
    frame = nodewire.decode(nodewire.encode_readings(seq, time, readings))
    assert isinstance(frame, ReadingsFrame)
    assert [(r.point, r.value) for r in frame.readings] == readings
    assert all(
        type(r.value) is type(v) for r, (_n, v) in zip(frame.readings, readings, strict=True)
    )


@given(
    st.sampled_from(NodeState),
    st.text(max_size=16),
    st.sampled_from(Result),
    st.text("abc-_", max_size=30),
)
def test_status_and_reply_round_trip(
    state: NodeState, text: str, result: Result, nonce: str
) -> None:
    s = nodewire.decode(nodewire.encode_status(1, 2, state, (3, 4, 5), text))
    assert s == StatusFrame(1, 2, state, (3, 4, 5), text)
    r = nodewire.decode(nodewire.encode_reply(1, 2, nonce, result, text))
    assert r == ReplyFrame(1, 2, nonce, result, text)


@given(st.binary(max_size=64))
def test_fuzz_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        frame = nodewire.decode(data)
    except DecodeError:
        return
    assert nodewire.decode(nodewire.encode(frame)) == frame


@given(st.binary(min_size=1, max_size=40))
def test_fuzz_after_a_valid_header(tail: bytes) -> None:
    for ftype in (1, 2, 3):
        data = bytes((0xCE, 1, ftype, 0, 1, 0, 0, 0, 0)) + tail
        with contextlib.suppress(DecodeError):
            nodewire.decode(data)
