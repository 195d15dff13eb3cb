"""Which RTU client: pymodbus' serial client or the plug-in's own line on the same codec.

``python -m bench.rtu_client [--seconds 10]``: a socat pty pair, ``cityedge simulate
water-sonde --serial`` on one end at 115200 baud (its answers take as long as on a real line:
some 5 ms per request), and on the other end each client in turn reading the sonde's two
planned blocks in a loop, one request at a time, each in a process of its own. Prints requests
per second and the client's CPU time per request (process CPU seconds, so a busy machine
changes the rate more than the cost). The line's baud rate bounds the rate, so the CPU per
request is what tells the clients apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from sim.localsite import cityedge_argv, start, start_pty_pair


async def _own(device: str, seconds: float) -> int:
    from edge.modbus.client import RtuLine
    from protocols.modbus_wire import Request

    line = RtuLine(
        device, 115200, "N", 2, 0.0, where=device, connect_timeout_s=3, reconnect_max_s=1,
        bus_hint="", no_reply_hint="",
    )  # fmt: skip
    reqs = [Request(1, 4, 0, 10), Request(1, 3, 100, 1)]
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for r in reqs:
            await line.request(r, 1.0)
            n += 1
    line.close()
    return n


async def _pymodbus(device: str, seconds: float) -> int:
    from pymodbus.client import AsyncModbusSerialClient

    client = AsyncModbusSerialClient(device, baudrate=115200, parity="N", stopbits=2, timeout=1)
    await client.connect()
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await client.read_input_registers(0, count=10, device_id=1)
        await client.read_holding_registers(100, count=1, device_id=1)
        n += 2
    client.close()
    return n


def client_main(which: str, device: str, seconds: float) -> None:
    """Run one client (in a process of its own); print requests and CPU seconds."""
    run = _own if which == "own" else _pymodbus
    asyncio.run(run(device, 0.5))  # warm up: imports, first connection
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    n = asyncio.run(run(device, seconds))
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    print(f"{n} {wall} {cpu}")


def main(seconds: float) -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="cityedge-rtu-") as tmp:
        work = Path(tmp)
        pair = start_pty_pair(work)
        sim = start(
            "sim",
            cityedge_argv("simulate", "water-sonde", "--serial", pair.a, "--baudrate", "115200",
                          "--parity", "N"),
            work,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while "simulating" not in sim.log_path.read_text(errors="replace"):
                if not sim.alive() or time.monotonic() > deadline:
                    raise RuntimeError(sim.tail())
                time.sleep(0.05)
            for which in ("pymodbus", "own"):
                import subprocess

                out = subprocess.run(
                    [sys.executable, "-m", "bench.rtu_client", "--client", which, "--device",
                     pair.b, "--seconds", str(seconds)],
                    capture_output=True, text=True, check=True, env={**os.environ},
                )  # fmt: skip
                n, wall, cpu = (float(x) for x in out.stdout.split()[-3:])
                console.print(
                    f"{which:9s} {n / wall:8,.0f} requests/s  {1e6 * cpu / n:6.0f} µs CPU per "
                    f"request  (load {os.getloadavg()[0]:.2f})"
                )
        finally:
            sim.stop()
            pair.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client", choices=("own", "pymodbus"))
    parser.add_argument("--device")
    a = parser.parse_args()
    if a.client:
        client_main(a.client, a.device, a.seconds)
    else:
        main(a.seconds)
