"""Network bring-up and the byte stream the MQTT link runs over.

:func:`wlan_up` joins Wi-Fi where the port has ``network.WLAN`` (ESP32, Pico W) with a deadline;
the unix port has no WLAN and is on the network already. :func:`open_stream` makes a TCP (or TLS
with the device certificate: mbedTLS, PEM or DER) connection with a deadline and returns a
:class:`Stream` whose ``recv(timeout_ms)`` waits with ``select.poll`` and never blocks longer.
"""

import select
import socket

from cenode.compat import sleep_ms, ticks_diff, ticks_ms


def wlan_up(ssid: str, psk: str, timeout_ms: int = 15000) -> bool:
    """Join Wi-Fi; True when connected (or when this port has no Wi-Fi to join)."""
    try:
        import network  # type: ignore[import-not-found]
    except ImportError:
        return True
    if not hasattr(network, "WLAN"):
        return True
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return True
    wlan.connect(ssid, psk)
    start = ticks_ms()
    while not wlan.isconnected():
        if ticks_diff(ticks_ms(), start) > timeout_ms:
            return False
        sleep_ms(100)
    return True


def sync_time() -> bool:
    """Set the clock from NTP where the port has ``ntptime``; True when the clock is set."""
    try:
        import ntptime  # type: ignore[import-not-found]
    except ImportError:
        import time

        return time.time() > 1_700_000_000  # the unix port's clock is the host's
    try:
        ntptime.settime()
        return True
    except (OSError, OverflowError):
        return False


class Stream:
    def __init__(self, sock, raw) -> None:
        self.sock = sock
        self.raw = raw
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        # received bytes land here first: a read(256) allocated 257 bytes at every poll of the
        # node's loop (20 a second), mostly to find nothing, and churned a small heap
        self.buf = bytearray(256)
        self.view = memoryview(self.buf)

    def send(self, data: bytes) -> None:
        mv = memoryview(data)
        while mv:
            n = self.sock.write(mv) if hasattr(self.sock, "write") else self.sock.send(mv)
            if n is None:  # would block (non-blocking TLS)
                sleep_ms(5)
                continue
            if n <= 0:
                raise OSError("connection closed while sending")
            mv = mv[n:]

    def recv(self, timeout_ms: int) -> bytes:
        data = self._read()
        if data is None and timeout_ms > 0:
            for _obj, ev in self.poller.poll(timeout_ms):
                if ev & (select.POLLHUP | select.POLLERR):
                    raise OSError("connection closed")
            data = self._read()
        return data or b""

    def _read(self):
        sock = self.sock
        try:
            n = sock.readinto(self.buf) if hasattr(sock, "readinto") else sock.recv_into(self.buf)
        except OSError as err:
            if err.args and err.args[0] in (11, 115):  # EAGAIN, EINPROGRESS
                return None
            raise
        if n is None:
            return None
        if n == 0:
            raise OSError("connection closed by the broker")
        return bytes(self.view[:n])

    def close(self) -> None:
        self.sock.close()


def open_stream(host: str, port: int, tls: dict | None = None, timeout_ms: int = 5000) -> Stream:
    """TCP, or TLS when ``tls`` has ``ca``, ``cert`` and ``key`` (bytes, PEM or DER)."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    raw = socket.socket()
    try:
        raw.settimeout(timeout_ms / 1000)
        raw.connect(addr)
        sock = raw
        if tls is not None:
            sock = _wrap(raw, host, tls)
        raw.setblocking(False)
        if sock is not raw and hasattr(sock, "setblocking"):
            sock.setblocking(False)
    except BaseException:
        raw.close()
        raise
    return Stream(sock, raw)


def opener(broker: dict, wifi, certs: str):
    """The link's ``open_stream`` for ``broker`` (config.json's): each connect attempt (paced by
    the link's backoff) first makes sure Wi-Fi is up; with TLS, the material (``ca.der``,
    ``node.der``, ``node.key.der`` in the ``certs`` folder) is read at each connect rather than
    kept in the heap."""

    def connect() -> Stream:
        if wifi and not wlan_up(wifi["ssid"], wifi["psk"], 5000):
            raise OSError("no Wi-Fi " + wifi["ssid"])
        tls = None
        if broker["tls"]:
            tls = {}
            for key, name in (("ca", "ca.der"), ("cert", "node.der"), ("key", "node.key.der")):
                with open(certs + "/" + name, "rb") as f:
                    tls[key] = f.read()
        return open_stream(broker["host"], broker["port"], tls)

    return connect


def _wrap(raw, host: str, tls: dict):
    try:
        import tls as mtls  # type: ignore[import-not-found]  # MicroPython >= 1.23
    except ImportError as err:
        raise OSError("this port has no 'tls' module: use a MicroPython build with TLS")
    ctx = mtls.SSLContext(mtls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = mtls.CERT_REQUIRED  # pyright: ignore[reportAttributeAccessIssue]  (not in the stubs)
    ctx.load_verify_locations(tls["ca"])
    ctx.load_cert_chain(tls["cert"], tls["key"])
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except ValueError as err:
        # MicroPython's tls says a failed verification (wrong CN, another CA: a captive portal,
        # a proxy, the wrong broker) with ValueError; to the link it is a failed connect, tried
        # again with backoff, never a crash of the node
        raise OSError("TLS: " + " ".join(str(err).split())) from err
