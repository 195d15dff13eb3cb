"""The hj212 sink against the platform simulator (real TCP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from edge.channel import Channel
from edge.hj212_sink.config import Hj212SinkConfig
from edge.hj212_sink.sink import Hj212Sink
from edge.readings import Reading, ReadingBatch
from protocols import envelope as env
from sim.devices.hj212_platform import Platform, serve
from sim.localsite import free_port
from tests.edge import contexts

HOUR = datetime(2026, 1, 1, 4, tzinfo=UTC)  # 12:00 in China


@contextlib.asynccontextmanager
async def platform(port: int | None = None, **kw: Any) -> AsyncIterator[tuple[Platform, int]]:
    plat = Platform(**kw)
    port = port or free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(plat, "127.0.0.1", port, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield plat, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Uplink:
    def __init__(self, port: int, **overrides: Any) -> None:
        cfg = {
            "type": "hj212", "name": "bureau", "host": "127.0.0.1", "port": port, "pw": "123456",
            "ack_timeout_s": 0.5, "resends": 2, "realtime_interval_s": 0, "reconnect_max_s": 0.5,
            "stations": [{"device": "river", "mn": "RIVER01", "st": 21}, {"device": "air", "mn": "AIR01", "st": 22}],
            **overrides,
        }  # fmt: skip
        self.config = Hj212SinkConfig.model_validate(cfg)
        self.outbox: Channel[env.EnvelopeModel] = Channel("out", 100)
        ctx = contexts.sink("bureau", outbox=self.outbox).ctx
        self.emitter = ctx.emitter
        self.sink = Hj212Sink(self.config, ctx)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Uplink:
        self.task = asyncio.create_task(self.sink.run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.outbox.close()
        assert self.task is not None
        try:
            async with asyncio.timeout(5):
                await self.task
        except TimeoutError:
            self.task.cancel()

    def hour(self, device: str, **values: float) -> env.AggregateEnvelope:
        stats = [
            env.PointStats(point=k, count=60, coverage=1, min=v - 1, avg=v, max=v + 1, flag="N")
            for k, v in values.items()
        ]
        payload = env.AggregatePayload(period="hour", start=HOUR, medium="water", values=stats)
        return self.emitter.aggregate(device, HOUR.timestamp() + 3600, payload)


async def until(pred: Any, timeout_s: float = 10) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_hour_data_arrives_with_codes_local_time_and_answers() -> None:
    async with (
        platform(pw="123456", mns=frozenset({"RIVER01", "AIR01"})) as (plat, port),
        Uplink(port) as up,
    ):
        await up.outbox.put(up.hour("river", ph=7.41, dissolved_oxygen=8.2, turbidity=3.5))
        await until(lambda: plat.messages)
    (msg,) = plat.messages
    assert (msg.cn, msg.st, msg.mn, msg.pw, msg.flag) == (2061, 21, "RIVER01", "123456", 5)
    assert msg.cp.get("DataTime") == "20260101120000"  # UTC+8
    assert msg.cp.pollutants() == {
        "w01001": {"Min": "6.41", "Avg": "7.41", "Max": "8.41", "Flag": "N"},
        "w01009": {"Min": "7.2", "Avg": "8.2", "Max": "9.2", "Flag": "N"},
        "w01003": {"Min": "2.5", "Avg": "3.5", "Max": "4.5", "Flag": "N"},
    }
    assert up.sink.sent == 1 and up.sink.resent == 0


async def test_unanswered_frame_is_resent_with_the_same_qn() -> None:
    async with platform() as (plat, port), Uplink(port) as up:
        plat.drop_answers = 2
        await up.outbox.put(up.hour("river", ph=7.0))
        await until(lambda: up.sink.sent == 1)
    assert plat.counts["answers_dropped"] == 2
    assert up.sink.resent == 2
    assert list(plat.frames_by_qn.values()) == [3]  # one QN, sent three times


async def test_given_up_after_recount_and_the_next_message_goes() -> None:
    async with platform() as (plat, port), Uplink(port, resends=1) as up:
        plat.drop_answers = 2
        await up.outbox.put(up.hour("river", ph=7.0))
        await up.outbox.put(up.hour("river", ph=7.1))
        await until(lambda: up.sink.sent == 1)
    assert up.sink.unanswered == 1
    assert [m.cp.pollutants()["w01001"]["Avg"] for m in plat.messages] == ["7", "7.1"]


async def test_long_hour_data_goes_split_and_the_platform_joins_it() -> None:
    values = {f"p{i}": float(i) for i in range(40)}
    codes = {f"p{i}": f"w9{i:04d}" for i in range(40)}
    stations = [{"device": "river", "mn": "RIVER01", "codes": codes}]
    async with platform() as (plat, port), Uplink(port, stations=stations, max_segment=400) as up:
        await up.outbox.put(up.hour("river", **values))
        await until(lambda: plat.messages)
    (msg,) = plat.messages
    assert len(msg.cp.pollutants()) == 40 and msg.cp.pollutants()["w90039"]["Avg"] == "39"
    assert up.sink.sent > 5  # every part was answered


async def test_realtime_data_is_rate_limited() -> None:
    async with platform() as (plat, port), Uplink(port, realtime_interval_s=60) as up:
        for i in range(3):
            batch = ReadingBatch(
                "src", "air", 1_767_225_600 + i, (Reading("pm2_5", 35 + i), Reading("co", 0.8))
            )
            await up.outbox.put(up.emitter.telemetry(batch))
        await until(lambda: plat.messages)
        await asyncio.sleep(0.3)
    (msg,) = plat.messages
    assert msg.cn == 2011 and msg.cp.pollutants() == {
        "a34004": {"Rtd": "35", "Flag": "N"},
        "a21005": {"Rtd": "0.8", "Flag": "N"},
    }


async def test_platform_commands_are_answered() -> None:
    async with platform(pw="123456") as (plat, port), Uplink(port) as up:
        await up.outbox.put(up.hour("river", ph=7.0))
        await until(lambda: plat.messages)
        await plat.command("RIVER01", 1062, {"RtdInterval": "45"})
        await plat.command("RIVER01", 1061, {})
        await plat.command("RIVER01", 3999, {})
        await until(lambda: len(plat.answers) >= 6)
    assert up.sink.realtime_interval_s == 45
    got = [(a.cn, dict(a.cp.items())) for a in plat.answers]
    assert got == [
        (9011, {"QnRtn": "1"}), (9012, {"ExeRtn": "1"}),
        (9011, {"QnRtn": "1"}), (1061, {"RtdInterval": "45"}), (9012, {"ExeRtn": "1"}),
        (9011, {"QnRtn": "2"}),
    ]  # fmt: skip


async def test_wrong_password_is_refused_by_the_platform() -> None:
    async with (
        platform(pw="654321") as (plat, port),
        Uplink(port, resends=0, ack_timeout_s=0.3) as up,
    ):
        await up.outbox.put(up.hour("river", ph=7.0))
        await until(lambda: up.sink.unanswered == 1)
    assert plat.counts["refused"] == 1 and not plat.messages


async def test_reconnects_and_sends_what_it_held() -> None:
    port = free_port()
    async with Uplink(port) as up:
        await up.outbox.put(up.hour("river", ph=7.2))
        await asyncio.sleep(0.5)  # platform down: held, connection retried with backoff
        assert len(up.sink.queue) == 1
        async with platform(port=port) as (plat, _):
            await until(lambda: plat.messages, 10)
    assert plat.messages[0].cp.pollutants()["w01001"]["Avg"] == "7.2"
