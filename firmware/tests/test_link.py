"""The node's MQTT link against the in-memory broker: reconnect, resubscribe, offline queue."""

from fakes import Broker, Clock
from t import eq

from cenode.link import Link


def make(queue_max: int = 8, keepalive_s: int = 30):
    clock = Clock()
    broker = Broker(clock)
    got: list = []
    link = Link(
        broker.open_stream, "node-1", keepalive_s=keepalive_s, queue_max=queue_max,
        backoff_min_ms=500, backoff_max_ms=8000, on_message=lambda t, p: got.append((t, p)), ticks=clock, sleep=clock.sleep,
    )
    return clock, broker, link, got


def run(link, clock, ms: int) -> None:
    end = clock.ms + ms
    while clock.ms < end:
        link.poll(50)


def test_connects_subscribes_and_delivers_in_order() -> None:
    clock, broker, link, got = make()
    link.subscribe("in")
    for i in range(5):
        link.publish("up", bytes((i,)))
    run(link, clock, 1000)
    eq(broker.of("up"), [bytes((i,)) for i in range(5)])
    eq(link.pending, 0)
    eq(link.stats["acked"], 5)
    broker.send("in", b"hello")
    run(link, clock, 200)
    eq(got, [("in", b"hello")])


def test_broker_restart_reconnects_resubscribes_and_delivers_what_was_queued() -> None:
    clock, broker, link, got = make()
    link.subscribe("in")
    run(link, clock, 500)
    broker.restart()
    broker.up = False
    for i in range(3):
        link.publish("up", bytes((i,)))
    run(link, clock, 20000)  # broker down 20 s: attempts back off, nothing is lost
    eq(link.connected, False)
    eq(link.pending, 3)
    attempts_before = link.stats["connects"]
    broker.up = True
    run(link, clock, 10000)
    eq(link.connected, True)
    eq(link.stats["connects"], attempts_before + 1)
    eq(broker.of("up"), [b"\x00", b"\x01", b"\x02"])
    broker.send("in", b"after")
    run(link, clock, 200)
    eq(got, [("in", b"after")])


def test_unacknowledged_publishes_are_sent_again_in_order() -> None:
    clock, broker, link, got = make()
    run(link, clock, 200)
    broker.ack = False
    for i in range(6):
        link.publish("up", bytes((i,)))
    run(link, clock, 200)
    eq(len(link.inflight), 4)  # the window
    broker.restart()
    broker.ack = True
    run(link, clock, 5000)
    eq(link.pending, 0)
    eq(broker.of("up")[-6:], [bytes((i,)) for i in range(6)])


def test_full_queue_drops_the_oldest_and_counts() -> None:
    clock, broker, link, got = make(queue_max=3)
    broker.up = False
    for i in range(5):
        link.publish("up", bytes((i,)))
    eq(link.stats["dropped"], 2)
    broker.up = True
    run(link, clock, 5000)
    eq(broker.of("up"), [b"\x02", b"\x03", b"\x04"])


def test_backoff_grows_and_is_capped() -> None:
    clock, broker, link, got = make()
    broker.up = False
    starts = []
    for _ in range(400):
        before = link.next_try
        link.poll(50)
        if link.next_try != before:
            starts.append(link.delay_ms)
    eq(starts[:5], [500, 1000, 2000, 4000, 8000])
    eq(max(starts), 8000)


def test_silent_broker_is_detected_by_keepalive() -> None:
    clock, broker, link, got = make(keepalive_s=10)
    run(link, clock, 200)
    broker.answer_pings = False
    run(link, clock, 25000)
    eq(link.stats["lost"] >= 1, True)
    eq(broker.pings >= 1, True)


def test_refused_connection_backs_off() -> None:
    clock, broker, link, got = make()
    broker.connack_code = 5
    run(link, clock, 3000)
    eq(link.connected, False)
    eq(link.stats["refused"] >= 1, True)
    eq("not authorized" in link.last_error, True)
