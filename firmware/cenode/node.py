"""The node core: one loop that samples, reports, listens and keeps the node healthy.

Per turn: feed the watchdog, let the link connect/send/read (:meth:`Link.poll`), sample when the
report interval is due and queue a readings frame, run the app's timed work. Messages from the
gateway arrive through the link: signed commands (``cmd``), OTA manifests (``ota``) and image
chunks (``ota/data``). Status frames are retained, so the gateway always sees the last state; the
will (published by the broker if the node vanishes) says ``offline``.

Reports go to the flash queue (:mod:`cenode.fqueue`, ``queue/`` in the node's folder) as
queued-readings frames named by (boot, seq): ``boot`` is drawn at random at each boot (and when
seq wraps), seq counts the reports of a boot from 0 (status frames number their own). The link sends from that queue; a report leaves it only when the gateway
acknowledges it on ``cmd`` (an ack frame), i.e. once it is in the gateway's durable outbox, not
when the broker PUBACKs. Status frames stay on the link's RAM queue (retained: the last counts).

Health: the firmware counts as healthy once its first readings frame was acknowledged by the
broker; a pending OTA image is then kept (:func:`bootsel.mark_healthy`).

Heap: what only commands and updates need (Ed25519, SHA-512, the OTA code, ~20 KB of a 64 KB
heap) is imported when the first command or manifest arrives, not at boot. What only the boot
needs (:mod:`cenode.boot`: reading and checking config.json, which checks the trusted keys with
Ed25519) is unloaded before the loop runs; the TLS material is read from flash at each connect.
"""

import gc
import os

import bootsel
from cenode import wire
from cenode.compat import clock_set, sleep_ms, ticks_add, ticks_diff, ticks_ms, unix_time


def _log(*args) -> None:
    print("node:", *args)


class Node:
    def __init__(
        self,
        root: str,
        config: dict,
        board,
        open_stream,
        ticks=ticks_ms,
        sleep=None,
        wall=None,
        log=_log,
    ) -> None:
        self.root = root
        self.config = config
        self.board = board
        self.ticks = ticks
        self.wall = wall
        self.log = log
        self.site = config["site"]
        self.name = config["node"]
        from cenode import apps
        from cenode.fqueue import FlashQueue
        from cenode.link import Link

        self.app = apps.make(config["kind"], board, config["app"])
        self.ota = None  # cenode.ota.Ota, made by cenode.remote when the first update comes
        self.nonces = None  # cenode.signed.Nonces, likewise for commands
        self.version = bootsel.version(root)
        self.seq = int.from_bytes(os.urandom(2), "big")  # a restart does not repeat recent seqs
        self.boot = int.from_bytes(os.urandom(4), "big")
        self.report_seq = 0
        self.queue = FlashQueue(root + "/queue", wire.queued_key, config.get("queue_bytes", 65536))
        self.interval_ms = int(config["report_interval_s"] * 1000)
        self.next_report = ticks()
        self.healthy = False
        self.health_after: int | None = None
        self.restart_due = False
        self.reported = 0
        broker = config["broker"]
        will = (self.topic("status"), self._status(wire.OFFLINE, "connection lost"), 1, True)
        self.link = Link(
            open_stream,
            client_id=self.name,
            keepalive_s=broker["keepalive_s"],
            will=will,
            queue_max=config["queue_max"],
            on_message=self.on_message,
            feed=self._feed,
            on_connect=self.queue.rewind,
            ticks=ticks,
            sleep=sleep or sleep_ms,
            log=log,
        )
        for channel in ("cmd", "ota", "ota/data"):
            self.link.subscribe(self.topic(channel))
        rolled = bootsel.rolled_back(root)
        if rolled:
            log("firmware", rolled, "never reported healthy: rolled back")
            self.send_status(wire.ROLLED_BACK, "rolled back from " + rolled)
        else:
            self.send_status(wire.BOOT, "")

    def topic(self, channel: str) -> str:
        return wire.topic(self.site, self.name, channel)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq

    def _next_report_seq(self) -> int:
        """The next report's seq; a new boot id when seq wraps: (boot, seq) never repeats."""
        if self.report_seq > 0xFFFF:
            self.boot = int.from_bytes(os.urandom(4), "big")
            self.report_seq = 0
        self.report_seq += 1
        return self.report_seq - 1

    def _feed(self):
        frame = self.queue.next(self.ticks())
        return None if frame is None else [self.topic("up"), frame, False, True]

    def now(self) -> int:
        """Unix seconds, or 0 while the clock is not set."""
        if self.wall is not None:
            return self.wall()
        return unix_time() if clock_set() else 0

    def _status(self, state: int, reason: str) -> bytes:
        return wire.encode_status(self.next_seq(), self.now(), state, self.version, reason)

    def send_status(self, state: int, reason: str = "") -> None:
        self.link.publish(self.topic("status"), self._status(state, reason), retain=True)

    def report(self) -> None:
        readings = self.app.sample()
        if not readings:
            return
        seq = self._next_report_seq()
        self.queue.append(wire.encode_readings(seq, self.now(), readings, self.boot))
        self.reported += 1
        if not self.link.connected and not len(self.queue) % 50:
            self.log("queued", len(self.queue), "reports in flash")
        gc.collect()  # between reports, so a long run does not fragment the heap
        if self.config.get("log_heap") and hasattr(gc, "mem_alloc"):
            # in use, free, and the publishes the broker acknowledged so far (the benchmark
            # counts a heap size only if the node's reports also got out)
            self.log("heap", gc.mem_alloc(), gc.mem_free(), self.link.stats["acked"])  # type: ignore[attr-defined]
        if self.health_after is None:  # this report's PUBACK, after what the link had
            self.health_after = self.link.stats["acked"] + self.link.pending + 1

    def _check_health(self) -> None:
        if self.healthy or self.health_after is None:
            return
        if self.link.stats["acked"] + self.link.stats["dropped"] >= self.health_after:
            self.healthy = True
            kept = bootsel.mark_healthy(self.root)
            if kept:
                self.log("firmware", kept, "is healthy: kept")
            self.send_status(wire.HEALTHY, "ok")

    def step(self, wait_ms: int = 50) -> None:
        self.board.feed()
        self.link.poll(wait_ms)
        now = self.ticks()
        if ticks_diff(now, self.next_report) >= 0:
            self.next_report = ticks_add(self.next_report, self.interval_ms)
            if ticks_diff(now, self.next_report) >= 0:  # overran: skip missed slots
                self.next_report = ticks_add(now, self.interval_ms)
            self.report()
        self.app.tick()
        self._check_health()

    # -- messages from the gateway --------------------------------------------------------

    def on_message(self, topic: str, payload: bytes) -> None:
        channel = topic[topic.rfind(self.name) + len(self.name) + 1 :]
        if channel not in ("cmd", "ota", "ota/data"):
            return
        if channel == "cmd" and payload[:1] == b"\xce":  # the gateway has these reports
            ack = wire.parse_ack(payload)
            if ack is not None:
                self.queue.ack(ack[0], ack[1])
            return
        try:
            from cenode import remote  # commands and updates: loaded when the first one comes

            remote.handle(self, channel, payload)
        except MemoryError:
            # a full heap must not take the node down: say so, and let the sender try again
            self.ota = None
            gc.collect()
            self.log("no memory for a", channel, "message; dropped")
            if channel != "cmd":
                self.send_status(wire.OTA_REFUSED, "no-memory: send the update again")

    def run(self, turns: int = -1) -> None:
        """Run the loop (``turns`` < 0: forever); restarts the board after an update."""
        while turns:
            turns -= 1
            self.step()
            if self.restart_due:
                deadline = ticks_add(self.ticks(), 3000)
                while self.link.pending and ticks_diff(deadline, self.ticks()) > 0:
                    self.link.poll(50)
                self.link.close()
                self.board.reset()
                return


def main(root: str) -> None:
    from cenode import boot  # what only the boot needs: unloaded before the loop runs

    node = boot.start(root)
    boot.forget(("cenode.boot",))
    boot = None
    gc.collect()  # boot garbage (module loading, config parsing) out of the way
    node.run()
