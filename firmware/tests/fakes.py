"""Fakes behind the firmware's real interfaces: a clock, a board, an in-memory MQTT broker."""

from cenode import mqtt

MASK = (1 << 30) - 1


class Clock:
    def __init__(self) -> None:
        self.ms = 1000

    def __call__(self) -> int:
        return self.ms & MASK

    def advance(self, ms: int) -> None:
        self.ms += max(ms, 1)

    sleep = advance


class Board:
    def __init__(self, echoes=None, adc=None, inputs=None) -> None:
        self.echoes = list(echoes or [])  # consumed in turn, the last one repeats
        self.adc = dict(adc or {})  # name -> mV (or a list consumed in turn)
        self.inputs = dict(inputs or {})
        self.outputs: dict = {}
        self.stuck: set = set()  # outputs that do not follow writes
        self.feeds = 0
        self.resets = 0

    def echo_us(self, timeout_us: int = 30000) -> int:
        return self.echoes.pop(0) if len(self.echoes) > 1 else self.echoes[0]

    def adc_mv(self, name: str, vref_mv: int = 3300) -> float:
        v = self.adc[name]
        if isinstance(v, list):
            return v.pop(0) if len(v) > 1 else v[0]
        return v

    def read(self, name: str) -> bool:
        return bool(self.inputs.get(name, False))

    def write(self, name: str, on: bool) -> None:
        if name not in self.stuck:
            self.outputs[name] = on

    def output(self, name: str) -> bool:
        return bool(self.outputs.get(name, False))

    def feed(self) -> None:
        self.feeds += 1

    def reset(self) -> None:
        self.resets += 1


class Stream:
    def __init__(self, broker) -> None:
        self.broker = broker
        self.inbox = bytearray()
        self.reader = mqtt.Reader(1 << 20)
        self.closed = False
        self.client_id = ""
        self.will = None
        self.subs: list = []

    def send(self, data: bytes) -> None:
        if self.closed:
            raise OSError("closed")
        self.reader.feed(data)
        for p in self.reader.packets():
            self.broker.handle(self, p)

    def recv(self, timeout_ms: int) -> bytes:
        if self.closed and not self.inbox:
            raise OSError("connection reset")
        if not self.inbox:
            self.broker.clock.advance(max(timeout_ms, 1))
            return b""
        data = bytes(self.inbox)
        self.inbox = bytearray()
        return data

    def close(self) -> None:
        if not self.closed and self in self.broker.streams:
            self.broker.streams.remove(self)
        self.closed = True


class Broker:
    """Speaks enough MQTT 3.1.1 to the node: CONNACK, SUBACK, PUBACK, PINGRESP, retained
    messages, wills, and QoS 1 delivery to subscribers. ``up = False`` refuses connections;
    :meth:`restart` drops every connection (the will is published, as mosquitto does)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.up = True
        self.ack = True
        self.answer_pings = True
        self.connack_code = 0
        self.streams: list = []
        self.published: list = []  # (topic, payload, retain)
        self.retained: dict = {}
        self.connects: list = []
        self.pings = 0

    def open_stream(self):
        if not self.up:
            raise OSError("ECONNREFUSED")
        s = Stream(self)
        self.streams.append(s)
        return s

    def restart(self) -> None:
        for s in list(self.streams):
            if s.will:
                self._publish(s.will[0], s.will[1], s.will[2])
            s.close()

    def handle(self, s: Stream, packet: tuple) -> None:
        ptype, flags, body = packet
        if ptype == mqtt.CONNECT:
            n = body[10] << 8 | body[11]
            s.client_id = body[12 : 12 + n].decode()
            cflags = body[7]
            if cflags & 0x04:
                at = 12 + n
                tn = body[at] << 8 | body[at + 1]
                topic = body[at + 2 : at + 2 + tn].decode()
                at += 2 + tn
                pn = body[at] << 8 | body[at + 1]
                s.will = (topic, body[at + 2 : at + 2 + pn], bool(cflags & 0x20))
            self.connects.append(s.client_id)
            s.inbox += bytes((0x20, 2, 0, self.connack_code))
            if self.connack_code:
                s.close()
        elif ptype == mqtt.PUBLISH:
            topic, payload, qos, pid, retain = mqtt.parse_publish(flags, body)
            self._publish(topic, payload, retain)
            if qos and self.ack:
                s.inbox += mqtt.puback_packet(pid)
        elif ptype == mqtt.SUBSCRIBE:
            pid = body[:2]
            at = 2
            codes = b""
            while at < len(body):
                n = body[at] << 8 | body[at + 1]
                t = body[at + 2 : at + 2 + n].decode()
                at += 3 + n
                if t not in s.subs:
                    s.subs.append(t)
                codes += b"\x01"
                for topic, payload in self.retained.items():
                    if topic == t:
                        s.inbox += mqtt.publish_packet(topic, payload, 0, True)
            s.inbox += bytes((0x90, 2 + len(codes))) + pid + codes
        elif ptype == mqtt.PINGREQ:
            self.pings += 1
            if self.answer_pings:
                s.inbox += b"\xd0\x00"
        elif ptype == mqtt.DISCONNECT:
            s.will = None
            s.close()

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.published.append((topic, bytes(payload), retain))
        if retain:
            self.retained[topic] = bytes(payload)
        for s in self.streams:
            if topic in s.subs:
                s.inbox += mqtt.publish_packet(topic, payload, 1, False, 1)

    def send(self, topic: str, payload: bytes) -> None:
        """A message from the gateway side."""
        self._publish(topic, payload, False)

    def of(self, topic: str) -> list:
        return [p for t, p, _r in self.published if t == topic]
