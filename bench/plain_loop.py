"""The baseline of ``bench/fieldbus.py``: the plain pymodbus loop a developer writes by hand.

One AsyncModbusTcpClient per bus; per device a loop that reads the device's registers in the
same merged blocks cityedge plans (so the request count is equal and only the framework's cost
differs), decodes them with :func:`protocols.modbus.decode_value`, and publishes one JSON object
per poll with paho at QoS 1 to ``plain/<device>``. No deadlines, no availability, no bounded
queues: paho keeps whatever the broker has not acknowledged.

``python -m bench.plain_loop --mqtt-port N --interval S --devices 50 --port P [--port ...]``
(the fleet of ``cityedge simulate fleet`` with the same ports)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from edge.profiles import ProfileLibrary
from protocols.modbus import RegisterType, decode_value, plan_reads
from sim.devices.modbus_device import fleet_layout

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


async def device_loop(
    client: AsyncModbusTcpClient,
    unit: int,
    profile: str,
    name: str,
    interval: float,
    pub: mqtt.Client,
) -> None:
    blocks = plan_reads(p.spec() for p in ProfileLibrary().load(profile).points)
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        values: dict[str, object] = {}
        try:
            for b in blocks:
                if b.register_type is RegisterType.INPUT:
                    r = await client.read_input_registers(b.start, count=b.count, device_id=unit)
                else:
                    r = await client.read_holding_registers(b.start, count=b.count, device_id=unit)
                for p in b.points:
                    values[p.name] = decode_value(p, b.values_of(p, r.registers))
            pub.publish(f"plain/{name}", json.dumps(values), qos=1)
        except Exception as err:  # a hand-written loop: print and go on
            print(f"{name}: {err}", flush=True)
        await asyncio.sleep(max(0.0, interval - (loop.time() - t0)))


async def main(args: argparse.Namespace) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-loop")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)  # unbounded, as by default
    pub.connect("127.0.0.1", args.mqtt_port)
    pub.loop_start()
    clients = []
    for port in args.port:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        await client.connect()
        clients.append(client)
    async with asyncio.TaskGroup() as tg:
        for bus, unit, profile, name in fleet_layout(args.devices, len(args.port)):
            tg.create_task(device_loop(clients[bus], unit, profile, name, args.interval, pub))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--devices", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
