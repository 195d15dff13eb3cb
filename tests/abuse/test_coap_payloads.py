"""CoAP payloads from a device, wrong, hostile and huge: each fails that poll (counted, logged,
the device stays polled) or is a bad reading of one point; none stops the source."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap import resource
from hypothesis import given
from hypothesis import strategies as st

from edge.coap.config import CoapSourceConfig
from edge.coap.source import MAX_PAYLOAD_BYTES, CoapSource
from protocols import senml
from protocols.senml import Record
from tests.abuse.fuzz import FUZZ, fuzz_input, run
from tests.edge.coap.test_coap_source import free_udp_port
from tests.edge.source_harness import Captured, source_context

GOOD_SENML = senml.encode_json([Record("air:pm2_5", 12.5, "ug/m3"), Record("air:co", 0.4)])
GOOD_CBOR = senml.encode_cbor([Record("air:pm2_5", 12.5, "ug/m3"), Record("air:n", 3.0)])
GOOD = {  # a good payload of each format: (payload, Content-Format)
    "senml+json": (GOOD_SENML, 110),
    "senml+cbor": (GOOD_CBOR, 112),
    "json": (b'{"pm2_5": 12.5, "co": 0.4, "on": true}', 50),
    "text": (b"23.5", 0),
    "auto": (GOOD_SENML, 110),
}
BIG = b"1" + b"0" * 400  # beyond float range

# (format sent, Content-Format, payload): every row is refused as a whole poll
REFUSED = [
    ("senml+json", 110, b"[" * 100_000),  # RecursionError escaped the source (finding 9)
    ("senml+json", 110, b'[{"n":"x","v":' + BIG + b"}]"),  # OverflowError escaped
    ("senml+json", 110, b'[{"n":"x","vd":"\\ud800"}]'),  # UnicodeEncodeError escaped
    ("senml+json", 110, b'[{"bv":1e308,"n":"x","v":1e308}]'),  # gave inf
    ("senml+json", 110, b"\xff\xfe"),
    ("senml+json", 110, b"[" + b'{"n":"x","v":1},' * 70_000 + b'{"n":"x","v":1}]'),  # > 1 MiB
    ("senml+cbor", 112, cbor2.dumps([{0: "x", 2: 2**1100}])),
    ("senml+cbor", 112, b"\x9f" * 10_000),
    ("senml+cbor", 112, b""),
    ("json", 50, b"[" * 100_000),  # RecursionError escaped
    ("json", 50, b'{"a":' * 50 + b"1" + b"}" * 50),
    ("json", 50, b'{"a": ' + b"9" * 5000 + b"}"),
    ("json", 50, b"[1, 2]"),
    ("text", 0, b"1e999"),
    ("text", 0, b"nan"),
    ("text", 0, b"\xff"),
    ("text", 0, b"9" * 5000),  # parses as inf
    ("auto", 41, b"<xml/>"),  # a Content-Format that is none of ours
]


@contextlib.asynccontextmanager
async def coap_source(
    uri: str = "coap://127.0.0.1:5683/air", timeout_s: float = 2, **device: Any
) -> AsyncIterator[tuple[CoapSource, Captured]]:
    if device.get("format") == "text":
        device = {"points": [{"name": "value"}], **device}  # text carries one named number
    cfg = CoapSourceConfig.model_validate(
        {
            "type": "coap",
            "name": "coap",
            "timeout_s": timeout_s,
            "unavailable_after": 1,
            "devices": [{"name": "air", "uri": uri, "poll_interval_s": 0.05, **device}],
        }
    )
    cap = source_context("coap", capacity=10_000)
    src = CoapSource(cfg, cap.ctx)
    try:
        yield src, cap
    finally:
        await src.close()


def response(payload: bytes, cf: int | None) -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.CONTENT, payload=payload, content_format=cf)


def errors(cap: Captured, reason: str) -> float:
    return float(cap.metrics.poll_errors.labels("coap", "air", reason)._value.get())


@pytest.mark.parametrize(("fmt", "cf", "payload"), REFUSED, ids=range(len(REFUSED)))
async def test_a_hostile_payload_fails_the_poll_and_says_why(
    fmt: str, cf: int, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with coap_source(format=fmt) as (src, cap):
        dev = src.devices[0]
        with caplog.at_level(logging.WARNING, logger="edge.coap.source"):
            await src.handle(dev, response(payload, cf))
        assert not cap.batches()
        assert errors(cap, "CE310") == 1  # counted as a failed poll of the device
        (event,) = cap.availability()  # unavailable_after 1: the reason is in the event
        assert len(event.payload.reason) < 400  # the payload is never echoed whole
        assert len(caplog.records) <= 2 and all(len(r.getMessage()) < 600 for r in caplog.records)
        await src.handle(dev, response(*GOOD[fmt]))
        assert cap.batches(), "the next good payload gives readings again"


async def test_bad_payloads_are_logged_first_and_every_hundredth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with coap_source(format="json") as (src, cap):
        with caplog.at_level(logging.WARNING, logger="edge.coap.source"):
            for _ in range(250):
                await src.handle(src.devices[0], response(b"[", 50))
    bad = [r for r in caplog.records if "bad json payload" in r.getMessage()]
    assert [r.args[2] for r in bad] == [1, 100, 200]  # type: ignore[index]
    assert errors(cap, "CE310") == 250


async def test_a_value_not_finite_after_scale_is_a_bad_reading_of_that_point_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    points = [{"name": "pm", "key": "pm2_5", "scale": 10}, {"name": "co", "key": "co"}]
    payload = senml.encode_json([Record("air:pm2_5", 1e308), Record("air:co", 0.4)])
    async with coap_source(format="senml+json", points=points) as (src, cap):
        with caplog.at_level(logging.WARNING, logger="edge.coap.source"):
            await src.handle(src.devices[0], response(payload, 110))
            await src.handle(src.devices[0], response(payload, 110))
        batches = cap.batches()
        assert [[(r.point, r.value) for r in b.readings] for b in batches] == [[("co", 0.4)]] * 2
        assert errors(cap, "decode") == 2 and not cap.availability()
        assert sum("pm" in r.getMessage() for r in caplog.records) == 1  # once per point
        # and every reading that came out can be sent
        for b in batches:
            cap.ctx.emitter.telemetry(b)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"big": 1' + b"0" * 30 + b', "ok": 1}', {"big": 1e30, "ok": 1}),  # beyond int64: a float
        (b'{"huge": ' + BIG + b', "ok": 2}', {"ok": 2}),  # beyond float: dropped
        (b'{"nan": NaN, "inf": Infinity, "ok": 3}', {"ok": 3}),
    ],
    ids=["int-beyond-64-bits", "int-beyond-float", "non-finite"],
)
async def test_plain_json_keeps_only_values_an_envelope_can_carry(
    payload: bytes, expected: dict[str, float]
) -> None:
    async with coap_source(format="json") as (src, cap):
        await src.handle(src.devices[0], response(payload, 50))
        (batch,) = cap.batches()
        assert {r.point: r.value for r in batch.readings} == expected
        cap.ctx.emitter.telemetry(batch)


class Scripted(resource.Resource):  # type: ignore[misc]
    """Serves the payloads in turn, then the last one for ever."""

    def __init__(self, payloads: list[tuple[bytes, int]]) -> None:
        super().__init__()
        self.payloads = payloads
        self.served = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        payload, cf = self.payloads[min(self.served, len(self.payloads) - 1)]
        self.served += 1
        return aiocoap.Message(payload=payload, content_format=cf)


async def test_hostile_payloads_do_not_stop_the_polling_of_a_device() -> None:
    """Over real CoAP: the payloads that escaped as exceptions killed the source's task group;
    now each fails its poll and the device goes on being polled until a good one arrives."""
    hostile = [(row[2], row[1]) for row in REFUSED if row[0] in ("senml+json", "auto")]
    scripted = Scripted([*hostile, (GOOD_SENML, 110)])
    site = resource.Site()
    site.add_resource(["air"], scripted)
    port = free_udp_port()
    server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    try:
        # each hostile reply must arrive within the poll's timeout to be counted as refused: on
        # a busy machine (server and source share this loop) 2 s was once not enough
        async with coap_source(f"coap://127.0.0.1:{port}/air", timeout_s=20) as (src, cap):
            task = asyncio.create_task(src.run())
            await cap.wait_batches(1, timeout_s=30)
            alive = not task.done()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert alive, task.exception()
            assert scripted.served > len(hostile)
            assert errors(cap, "CE310") == len(hostile)
            assert [e.payload.state.value for e in cap.availability()] == [
                "unavailable",
                "recovered",
            ]
    finally:
        await server.shutdown()


@FUZZ
@given(
    st.sampled_from([("senml+json", 110), ("senml+cbor", 112), ("json", 50), ("text", 0)]),
    st.lists(
        fuzz_input([payload for payload, _ in GOOD.values()]),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_the_source_handles_any_payload(fmt: tuple[str, int], payloads: list[bytes]) -> None:
    """The handler itself (not only the decoder): for any bytes it raises nothing, and every
    reading it emits is a finite number an envelope can carry."""

    async def one() -> None:
        points = [{"name": "pm", "key": "pm2_5", "scale": 1e300}]
        for device in ({"format": fmt[0]}, {"format": "auto", "points": points}):
            async with coap_source(**device) as (src, cap):
                for payload in payloads:
                    await src.handle(src.devices[0], response(payload, fmt[1]))
                for batch in cap.batches():
                    for r in batch.readings:
                        assert isinstance(r.value, bool) or math.isfinite(r.value)
                    cap.ctx.emitter.telemetry(batch)

    run(one())


def test_payload_limit_is_the_senml_limit() -> None:
    assert MAX_PAYLOAD_BYTES == senml.MAX_PACK_BYTES == 1024 * 1024
