"""CoAP interop both ways with libcoap (Debian libcoap3-bin 4.3.1):

- our source (aiocoap) against libcoap's ``coap-server``: GET polling, Observe and a block-wise
  GET of a SenML document that ``coap-client`` PUT there in 64-byte blocks;
- libcoap's ``coap-client`` against our ``cityedge simulate coap-air`` process: SenML JSON, CBOR
  (Accept 112), Observe and a block-wise GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocols import senml
from sim.localsite import Proc, cityedge_argv, start
from tests.edge.coap.test_coap_source import free_udp_port, source


def libcoap(tool: str) -> str:
    """Debian ships the tools as coap-client-notls etc.; a plain name wins if present."""
    for name in (tool, f"{tool}-notls", f"{tool}-openssl", f"{tool}-gnutls"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{tool} is not installed: apt-get install libcoap3-bin (make sysdeps)")


def serve_coap(
    tmp_path: Path, name: str, argv: Callable[[int], list[str]], marker: bytes
) -> tuple[Proc, int]:
    """Start a CoAP server on a free UDP port and wait until *it* answers (its resource list
    holds ``marker``): on a shared machine another program may take the port first, and then
    this tries the next one."""
    client = libcoap("coap-client")
    for attempt in range(3):
        port = free_udp_port()
        proc = start(f"{name}-{attempt}", argv(port), tmp_path)
        deadline = time.monotonic() + 10
        while proc.alive() and time.monotonic() < deadline:
            r = subprocess.run(
                [client, "-B", "1", "-m", "get", f"coap://127.0.0.1:{port}/.well-known/core"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if marker in r.stdout:
                return proc, port
            time.sleep(0.1)
        proc.stop()
    raise TimeoutError(f"{name} did not start:\n{proc.tail()}")


@pytest.fixture
def coap_server(tmp_path: Path) -> Iterator[int]:
    server = libcoap("coap-server")

    def argv(port: int) -> list[str]:
        return [server, "-A", "127.0.0.1", "-p", str(port), "-d", "4"]

    proc, port = serve_coap(tmp_path, "coap-server", argv, b"</time>")
    try:
        yield port
    finally:
        proc.stop()


@pytest.fixture
def air_simulator(tmp_path: Path) -> Iterator[int]:
    def argv(port: int) -> list[str]:
        return cityedge_argv("simulate", "coap-air", "--port", str(port), "--period-s", "0.2")

    proc, port = serve_coap(tmp_path, "coap-air", argv, b"</air>")
    try:
        yield port
    finally:
        proc.stop()


def client(*args: str) -> bytes:
    r = subprocess.run(
        [libcoap("coap-client"), "-B", "5", *args], capture_output=True, timeout=20, check=True
    )
    return r.stdout


# -- aiocoap (our source) against libcoap's server -----------------------------------------


async def test_source_polls_libcoap_server_text_resource(coap_server: int) -> None:
    dev = {
        "name": "clock",
        "uri": f"coap://127.0.0.1:{coap_server}/time?ticks",
        "format": "text",
        "points": [{"name": "ticks", "unit": "s"}],
    }
    async with source(dev) as (src, cap):
        await src.poll_once(src.devices[0])
        (batch,) = cap.batches()
    (r,) = batch.readings
    assert (
        r.point == "ticks"
        and isinstance(r.value, int)
        and abs(r.value - time.time()) < 3600 * 24 * 365 * 50
    )


async def test_source_observes_libcoap_server(coap_server: int) -> None:
    dev = {
        "name": "clock",
        "uri": f"coap://127.0.0.1:{coap_server}/time?ticks",
        "format": "text",
        "observe": True,
        "max_silence_s": 5,
        "points": [{"name": "ticks"}],
    }
    async with source(dev) as (src, cap):
        task = asyncio.create_task(src.run())
        await cap.wait_batches(3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ticks = [b.readings[0].value for b in cap.batches()]
    assert len(ticks) >= 3 and ticks == sorted(ticks) and len(set(ticks)) >= 2  # one per second


async def test_source_reads_blockwise_what_coap_client_put_on_libcoap_server(
    coap_server: int, tmp_path: Path
) -> None:
    pack = [{"bn": "station-7:", "n": f"p{i}", "u": "Cel", "v": i + 0.25} for i in range(120)]
    doc = tmp_path / "big.json"
    doc.write_text(json.dumps(pack))
    uri = f"coap://127.0.0.1:{coap_server}/station"
    client(
        "-m", "put", "-t", "110", "-b", "64", "-f", str(doc), uri
    )  # block1 upload, 64-byte blocks
    async with source({"name": "station", "uri": uri, "format": "senml+json"}) as (src, cap):
        await src.poll_once(src.devices[0])
        (batch,) = cap.batches()
    assert len(doc.read_bytes()) > 4000
    assert [(r.point, r.value, r.unit) for r in batch.readings] == [
        (f"p{i}", i + 0.25, "Cel") for i in range(120)
    ]


# -- libcoap's client against our simulator -------------------------------------------------


def test_coap_client_reads_senml_json_and_cbor_from_the_simulator(air_simulator: int) -> None:
    uri = f"coap://127.0.0.1:{air_simulator}/air"
    records = senml.decode_json(client("-m", "get", uri))
    assert {r.name for r in records} == {
        f"air-1:{p}" for p in ("pm2_5", "pm10", "no2", "so2", "o3", "co", "temperature", "humidity")
    }
    with tempfile.TemporaryDirectory() as folder:  # -o: the payload alone (stdout adds '\n')
        client("-m", "get", "-A", "112", "-o", f"{folder}/air.cbor", uri)
        cbor = senml.decode_cbor(Path(folder, "air.cbor").read_bytes())
    assert {r.name for r in cbor} == {r.name for r in records}
    assert float(client("-m", "get", f"{uri}/pm2_5")) > 0


def test_coap_client_observes_the_simulator(air_simulator: int) -> None:
    out = client("-m", "get", "-s", "2", "-w", f"coap://127.0.0.1:{air_simulator}/air")
    packs = [line for line in out.splitlines() if line.startswith(b"[")]
    assert len(packs) >= 4  # the first response and a notification every 0.2 s
    for p in packs:
        assert len(senml.decode_json(p)) == 8


def test_coap_client_gets_the_history_blockwise(air_simulator: int) -> None:
    time.sleep(1.0)  # some samples
    out = client("-m", "get", "-b", "64", f"coap://127.0.0.1:{air_simulator}/air/history")
    records = senml.decode_json(out)
    assert len(out) > 1024 and len(records) % 8 == 0 and len(records) >= 16
