"""Node frames on the site broker, wrong, hostile and huge, through the ``mqtt`` source's
handler: counted and logged (rate-limited), never raised, never a reading an envelope refuses."""

from __future__ import annotations

import logging
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_bridge.link import Message
from edge.channel import Channel, Overflow
from edge.node_mqtt.source import MAX_UNKNOWN_LOGGED
from edge.readings import ReadingBatch
from protocols import nodewire
from protocols.nodewire import NodeState, Result
from tests.abuse.fuzz import FUZZ, fuzz_input, run
from tests.edge.node_mqtt.test_mqtt_source import NOW, make, up

GOOD = nodewire.encode_readings(1, int(NOW), [("fill_pct", 42.5), ("distance_mm", 640)])
HEADER = struct.pack(">BBBHI", 0xCE, 1, 1, 7, int(NOW))

BAD_FRAMES = [
    ("empty", b""),
    ("short header", GOOD[:5]),
    ("wrong magic", b"\x00" + GOOD[1:]),
    ("future version", GOOD[:1] + b"\x09" + GOOD[2:]),
    ("no readings", HEADER + b"\x00"),
    ("too many readings", HEADER + b"\xff" + b"\x01\x01" * 255),
    ("unknown point id", HEADER + b"\x01\xee\x01"),
    ("unknown tag", HEADER + b"\x01\x01\x09"),
    ("NaN float", HEADER + b"\x01\x01\x04" + struct.pack(">f", math.nan)),
    ("inf float", HEADER + b"\x01\x01\x04" + struct.pack(">f", math.inf)),
    ("cut value", HEADER + b"\x01\x01\x03\x00"),
    ("trailing bytes", GOOD + b"\x00"),
    ("1 MB of junk", GOOD + b"\x00" * 1_000_000),
    ("status reason not UTF-8", HEADER[:2] + b"\x02" + HEADER[3:] + b"\x01\x00\x01\x00\x00\xff"),
    ("status reason too long", nodewire.encode_status(1, 0, NodeState.BOOT, (1, 0, 0)) + b"x" * 65),
    ("unknown state", HEADER[:2] + b"\x02" + HEADER[3:] + b"\x63\x00\x01\x00\x00"),
    ("reply nonce not ASCII", HEADER[:2] + b"\x03" + HEADER[3:] + b"\x01\xff\x00"),
    ("unknown frame type", HEADER[:2] + b"\x07" + HEADER[3:]),
]


@pytest.mark.parametrize("payload", [p for _, p in BAD_FRAMES], ids=[n for n, _ in BAD_FRAMES])
async def test_a_bad_frame_is_counted_and_the_next_good_one_is_read(payload: bytes) -> None:
    src, readings, _ = make()
    await src.handle(up("bin-17", payload))
    assert readings.depth == 0
    assert src.nodes["bin-17"].bad_frames == 1
    assert src.ctx.metrics.poll_errors.labels("nodes", "bin-17", "decode")._value.get() == 1
    await src.handle(up("bin-17", GOOD))
    assert readings.depth == 1


@pytest.mark.parametrize(
    "topic",
    [
        "cityedge/node/v1/riverside/bin-17\n/up",  # '$' in match() allowed a final newline
        "cityedge/node/v1/riverside/bin-17/up/extra",
        "cityedge/node/v1/riverside/" + "n" * 10_000 + "/up",
        "cityedge/node/v1/riverside//up",
        "cityedge/node/v1/riverside/../up",
        "cityedge/node/v1/riverside/bin-17/ota/data",  # a channel the gateway does not read
        "cityedge/node/v1/riverside/bin\udc80/up",
        "",
    ],
    ids=["newline", "extra level", "huge", "empty node", "dots", "ota", "surrogate", "nothing"],
)
async def test_frames_on_topics_outside_the_tree_are_ignored(topic: str) -> None:
    src, readings, _ = make()
    await src.handle(Message(topic, GOOD, 1, False))
    assert readings.depth == 0 and not src.unknown


async def test_bad_frames_are_logged_first_and_every_hundredth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, _, _ = make()
    with caplog.at_level(logging.WARNING, logger="edge.node_mqtt.source"):
        for _ in range(250):
            await src.handle(up("bin-17", b"\xce"))
    assert len(caplog.records) == 3 and src.nodes["bin-17"].bad_frames == 250


async def test_unknown_node_names_are_remembered_within_a_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, readings, _ = make()
    with caplog.at_level(logging.WARNING, logger="edge.node_mqtt.source"):
        for i in range(MAX_UNKNOWN_LOGGED + 100):
            await src.handle(up(f"stranger-{i}", GOOD))
    assert len(src.unknown) == MAX_UNKNOWN_LOGGED == len(caplog.records)
    assert readings.depth == 0
    counted = src.ctx.metrics.poll_errors.labels("nodes", "unknown", "unknown-node")._value.get()
    assert counted == MAX_UNKNOWN_LOGGED + 100


SEEDS = [
    GOOD,
    nodewire.encode_readings(2, 0, [("door_open", True), ("relay_on", False)]),
    nodewire.encode_status(3, int(NOW), NodeState.OFFLINE, (1, 4, 0), "lost"),
    nodewire.encode_status(4, int(NOW), NodeState.ROLLED_BACK, (1, 3, 9), "watchdog"),
    nodewire.encode_reply(5, int(NOW), "n-1", Result.DONE, "ok"),
]


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["bin-17", "gate-1", "stranger"]), fuzz_input(SEEDS)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["up", "status", "res"]),
)
def test_fuzz_the_node_source_handles_any_frame(
    frames: list[tuple[str, bytes]], channel: str
) -> None:
    """The handler (not only the decoder): any bytes on any node channel raise nothing; what
    comes out is a finite reading or an availability envelope that can be encoded."""

    async def one() -> None:
        src, _, sent = make()
        src.ctx.readings = readings = Channel[ReadingBatch]("readings", 64, Overflow.DROP_OLDEST)
        for node, payload in frames:
            await src.handle(up(node, payload, channel))
        while (batch := readings.get_nowait()) is not None:
            for r in batch.readings:
                assert isinstance(r.value, bool) or math.isfinite(r.value)
            src.ctx.emitter.telemetry(batch)
        for envelope in sent:
            envelope.model_dump_json()

    run(one())
