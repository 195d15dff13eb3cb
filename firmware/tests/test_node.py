"""The node core with a fake board and the in-memory broker: reports, status, commands, OTA."""

import os

from fakes import Board, Broker, Clock
from t import eq, tmpdir, vectors, write

from cenode import config, wire
from cenode.node import Node

SITE, NAME = "riverside", "gate-1"


def topic(channel: str) -> str:
    return wire.topic(SITE, NAME, channel)


def node(kind: str = "gate-relay", board=None, interval_s: int = 10, gateway=None):
    clock = Clock()
    broker = Broker(clock)
    root = tmpdir()
    os.mkdir(root + "/app")
    write(root + "/app/VERSION", "1.0.0")
    keys = vectors("signed.json")["keys"]
    cfg = config.check({
        "site": SITE, "node": NAME, "kind": kind, "broker": {"host": "x", "port": 1},
        "report_interval_s": interval_s, "trusted_keys": keys, "gateway": gateway,
    })
    now = vectors("signed.json")["now"]
    n = Node(
        root, cfg, board or Board(echoes=[4077], adc={"temp": 700}), broker.open_stream,
        ticks=clock, sleep=clock.sleep, wall=lambda: now + clock.ms // 1000, log=lambda *a: None,
    )
    return n, broker, clock


def run(n, clock, ms: int) -> None:
    end = clock.ms + ms
    while clock.ms < end:
        n.step(50)


def acking(n, broker, clock, ms: int) -> None:
    """Run while a gateway acknowledges each queued report once it saw it."""
    end = clock.ms + ms
    done = 0
    while clock.ms < end:
        n.step(50)
        frames = broker.of(topic("up"))
        for f in frames[done:]:
            boot, seq = wire.queued_key(f)
            broker.send(topic("cmd"), ack(boot, [seq]))
        done = len(frames)


def ack(boot: int, seqs: list) -> bytes:
    import struct

    head = struct.pack(">BBBHIIB", 0xCE, 1, wire.ACK, 0, 0, boot, len(seqs))
    return head + struct.pack(">" + str(len(seqs)) + "H", *seqs)


def test_reports_status_and_readings_and_becomes_healthy() -> None:
    n, broker, clock = node("bin-fill")
    acking(n, broker, clock, 25000)
    frames = broker.of(topic("up"))
    eq(len(frames), 3)  # at 0, 10 and 20 s: each acknowledged, none sent twice
    eq(frames[0][:3], bytes((0xCE, 1, wire.QUEUED)))
    eq(len(n.queue), 0)
    eq(os.listdir(n.root + "/queue"), ["1"])  # the segment takes more; deleted once full and acked
    statuses = [p[9] for p in broker.of(topic("status"))]
    eq(statuses, [wire.BOOT, wire.HEALTHY])
    eq(broker.retained[topic("status")][9], wire.HEALTHY)
    eq(broker.streams[0].will[0], topic("status"))
    eq(broker.streams[0].will[1][9], wire.OFFLINE)
    eq(n.board.feeds > 100, True)
    broker.restart()  # the will is published by the broker
    eq(broker.retained[topic("status")][9], wire.OFFLINE)
    run(n, clock, 5000)
    eq(n.link.stats["connects"], 2)


def test_unacknowledged_reports_stay_in_flash_and_are_sent_again() -> None:
    n, broker, clock = node("bin-fill")
    run(n, clock, 25000)  # no gateway: the broker PUBACKs, nobody acknowledges
    sent = broker.of(topic("up"))
    eq(len(n.queue), 3)
    keys = sorted(set(wire.queued_key(f) for f in sent))
    eq(len(keys), 3)
    eq(len(sent) > 3, True)  # sent again after the acknowledgement timeout
    again = Node(n.root, n.config, n.board, broker.open_stream, ticks=clock, sleep=clock.sleep,
                 wall=lambda: 0, log=lambda *a: None)  # a reboot: the queue is read from flash
    eq(len(again.queue), 3)
    before = len(broker.of(topic("up")))
    acking(again, broker, clock, 1000)
    resent = set(wire.queued_key(f) for f in broker.of(topic("up"))[before:])
    eq([k for k in keys if k in resent], keys)
    eq(len(again.queue) <= 1, True)  # the three acknowledged (one new report may wait)


def test_signed_commands_act_once_and_bad_ones_do_not() -> None:
    n, broker, clock = node()
    run(n, clock, 500)
    env = {v["name"]: v["data"].encode() for v in vectors("signed.json")["envelopes"]}
    for bad in ("unsigned", "signed by another key", "good", "node other node"):
        broker.send(topic("cmd"), env[bad])  # "good" is valid until 2100: too long for a command
    run(n, clock, 500)
    eq(n.board.output("relay"), False)
    broker.send(topic("cmd"), env["node open"])
    run(n, clock, 500)
    eq(n.board.output("relay"), True)
    n.board.write("relay", False)
    broker.send(topic("cmd"), env["node open"])  # replayed
    run(n, clock, 500)
    eq(n.board.output("relay"), False)
    # reply: header (9) | nonce length | nonce | result | message
    results = [p[10 + p[9]] for p in broker.of(topic("res"))]
    eq(results, [wire.REFUSED] * 4 + [wire.DONE, wire.REFUSED])
    messages = [p[11 + p[9] :].decode().split(":")[0] for p in broker.of(topic("res"))]
    eq(messages, ["unsigned", "bad-signature", "too-long", "malformed", "open", "replayed"])


def test_commands_of_its_gateway_act_and_another_gateways_are_refused() -> None:
    n, broker, clock = node(gateway="gw-a")
    run(n, clock, 500)
    cases = {c["name"]: c["data"].encode() for c in vectors("delegation.json")["commands"]}
    broker.send(topic("cmd"), cases["another gateway's key"])
    run(n, clock, 500)
    eq(n.board.output("relay"), False)
    broker.send(topic("cmd"), cases["its gateway's key"])
    run(n, clock, 500)
    eq(n.board.output("relay"), True)
    replies = broker.of(topic("res"))
    results = [p[10 + p[9]] for p in replies]
    eq(results, [wire.REFUSED, wire.DONE])
    eq(replies[0][11 + replies[0][9] :].decode(), "wrong-gateway: key of gw-b; this node obeys gw-a")
    nonces = [replies[i][10 : 10 + replies[i][9]].decode() for i in (0, 1)]
    sent = [__import__("json").loads(cases[k])["nonce"] for k in ("another gateway's key", "its gateway's key")]
    eq(nonces, sent, "a refusal carries the command's nonce too")


def test_an_update_through_the_broker_installs_and_restarts() -> None:
    n, broker, clock = node()
    run(n, clock, 500)
    doc = vectors("ota.json")
    broker.send(topic("ota"), doc["downgrade"].encode())
    run(n, clock, 300)
    eq(broker.retained[topic("status")][9], wire.OTA_REFUSED)
    broker.send(topic("ota"), doc["manifest"].encode())
    image = bytes.fromhex(doc["image"])
    for at in range(0, len(image), 64):
        broker.send(topic("ota/data"), at.to_bytes(4, "big") + image[at : at + 64])
    run(n, clock, 1000)
    eq(n.restart_due, True)
    eq(broker.retained[topic("status")][9], wire.OTA_APPLIED)
    n.run(turns=1)
    eq(n.board.resets, 1)
    with open(n.root + "/app/VERSION") as f:
        eq(f.read(), "1.1.0")
