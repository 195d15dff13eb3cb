"""The self-test: wait for a node's first authenticated message after provisioning.

The tool connects to the site's local broker with its own certificate (``technician.<site>``)
and waits for a frame on the node's ``status`` or ``up`` topic. Retained messages are ignored
(they may be from before this provisioning); a frame arriving there is authenticated, since the
broker's ACL lets only the node's certificate write to those topics.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import nodewire
from protocols.errors import DecodeError
from provisioning.errors import SelfTestFailed


def wait_for_first_message(
    host: str,
    port: int,
    site: str,
    node: str,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    timeout_s: float = 60,
) -> nodewire.Frame:
    got: list[nodewire.Frame] = []
    bad: list[str] = []
    done = threading.Event()
    subscribed = threading.Event()
    topics = [nodewire.node_topic(site, node, c) for c in ("status", "up")]

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return
        try:
            got.append(nodewire.decode(bytes(msg.payload)))
        except DecodeError as err:
            bad.append(str(err))
            return
        done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"selftest-{node}-{time.monotonic_ns()}"
    )
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    client.tls_set_context(ctx)
    client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in topics])
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as err:
        raise SelfTestFailed(
            f"cannot reach the site broker {host}:{port}: {err}",
            hint="check the broker runs with broker/nodes.conf and this laptop reaches it",
        ) from err
    client.loop_start()
    try:
        if not subscribed.wait(min(10, timeout_s)):
            raise SelfTestFailed(
                f"the broker {host}:{port} did not accept the tool's subscription",
                hint="reload the broker so it reads the regenerated broker/acl",
            )
        if not done.wait(timeout_s):
            why = f" (undecodable frames: {bad[-1]})" if bad else ""
            raise SelfTestFailed(
                f"node {node} sent nothing within {timeout_s:.0f} s{why}",
                hint="check the node's power and Wi-Fi, that the broker was reloaded after "
                "provisioning (new ACL), and the node's serial console for errors",
            )
        return got[0]
    finally:
        client.loop_stop()
        client.disconnect()
