"""Signed OTA updates for sensor nodes: the bundle format and the signed manifest.

A bundle holds the files of the node's ``app/`` folder (``firmware/cenode`` compiled or as
source, plus ``VERSION``)::

    b"CEB1" + per file: u16 name length | name (ASCII, relative) | u32 size | bytes

The manifest body is JSON ``{"version", "size", "sha256", "format": "bundle"}`` inside a signed
envelope (:func:`protocols.signed.sign`, purpose ``ota``), so the node checks who made the update,
that it is newer than what runs, and that the bytes it received are the signed ones. The image is
sent on ``.../ota/data`` as chunks of ``u32 offset + bytes`` (:func:`chunks`).

:func:`deliver` sends an update to one node and waits for its verdict from its status frames
(:class:`protocols.nodewire.NodeState`): ``refused`` (OTA_REFUSED, with the node's reason),
``installed`` (OTA_APPLIED: written, restarting), ``kept`` (HEALTHY at the new version after
the restart: its first report was acknowledged), ``rolled-back`` (ROLLED_BACK: the new build
never reported healthy), or ``no-answer`` by the deadline.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import nodewire, signed
from provisioning.progress import Progress, quiet

if TYPE_CHECKING:
    from provisioning.inventory import Inventory
    from provisioning.sitebroker import Session

BUNDLE_MAGIC = b"CEB1"
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
DEFAULT_CHUNK = 512


def bundle(files: Mapping[str, bytes]) -> bytes:
    """The bundle of ``files`` (relative name -> bytes), in name order (reproducible)."""
    out = bytearray(BUNDLE_MAGIC)
    for name in sorted(files):
        if not _NAME.match(name) or ".." in name.split("/") or len(name) > 96:
            raise ValueError(f"bundle file name {name!r}: relative, ASCII letters/digits/_.-/")
        data = files[name]
        out += struct.pack(">H", len(name)) + name.encode() + struct.pack(">I", len(data)) + data
    return bytes(out)


def unbundle(data: bytes) -> dict[str, bytes]:
    """The files of a bundle (for checks and tests); ValueError when it is malformed."""
    if not data.startswith(BUNDLE_MAGIC):
        raise ValueError("not a firmware bundle (no CEB1 magic)")
    files: dict[str, bytes] = {}
    at = 4
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("bundle ends inside a file header")
        (n,) = struct.unpack_from(">H", data, at)
        name = data[at + 2 : at + 2 + n].decode("ascii")
        at += 2 + n
        if at + 4 > len(data):
            raise ValueError(f"bundle ends inside the header of {name}")
        (size,) = struct.unpack_from(">I", data, at)
        at += 4
        if at + size > len(data):
            raise ValueError(f"bundle ends inside {name}")
        files[name] = data[at : at + size]
        at += size
    return files


@dataclass(frozen=True)
class Update:
    version: str
    image: bytes
    manifest: bytes  # the signed envelope


def manifest_body(version: str, image: bytes) -> bytes:
    nodewire.parse_version(version)
    return json.dumps(
        {
            "version": version,
            "size": len(image),
            "sha256": hashlib.sha256(image).hexdigest(),
            "format": "bundle",
        },
        separators=(",", ":"),
    ).encode()


def make_update(
    version: str,
    files: Mapping[str, bytes],
    *,
    key: Ed25519PrivateKey,
    kid: str,
    expires_at: int,
    nonce: bytes | None = None,
) -> Update:
    """A bundle with ``VERSION`` set and its signed manifest."""
    image = bundle({**files, "VERSION": version.encode()})
    envelope = signed.sign(
        manifest_body(version, image),
        purpose="ota",
        kid=kid,
        key=key,
        expires_at=expires_at,
        nonce=nonce,
    )
    return Update(version, image, envelope)


def chunks(image: bytes, size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
    """``u32 offset + bytes`` payloads for ``.../ota/data``."""
    if size < 1:
        raise ValueError("chunk size must be positive")
    for at in range(0, len(image), size):
        yield struct.pack(">I", at) + image[at : at + size]


def build_update(
    version: str,
    *,
    target_name: str,
    key: Ed25519PrivateKey,
    kid: str,
    expires_at: int,
) -> Update:
    """The node firmware (``app/``) compiled for a target, bundled, with its signed manifest."""
    from provisioning import image

    compiled = image.compile_firmware(image.target(target_name), version)
    files = {k.removeprefix("app/"): v for k, v in compiled.items() if k.startswith("app/")}
    files.pop("VERSION", None)
    return make_update(version, files, key=key, kid=kid, expires_at=expires_at)


def publish_update(
    update: Update,
    *,
    host: str,
    port: int,
    site: str,
    node: str,
    ca: str,
    cert: str,
    key: str,
    chunk_size: int = DEFAULT_CHUNK,
    timeout_s: float = 30,
) -> int:
    """Send the manifest and the image chunks to one node (QoS 1, in order); returns chunks sent."""
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ota-{node}")
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    client.tls_set_context(ctx)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        infos = [client.publish(nodewire.node_topic(site, node, "ota"), update.manifest, qos=1)]
        data_topic = nodewire.node_topic(site, node, "ota/data")
        parts = list(chunks(update.image, chunk_size))
        for part in parts:
            infos.append(client.publish(data_topic, part, qos=1))
        for info in infos:
            info.wait_for_publish(timeout_s)
        return len(parts)
    finally:
        client.loop_stop()
        client.disconnect()


@dataclass(frozen=True)
class Verdict:
    node: str
    outcome: str  # kept | installed | refused | rolled-back | no-answer
    running: str  # the version the node said it runs, last heard
    reason: str
    chunks: int


def _text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def deliver(
    session: Session,
    site: str,
    node: str,
    update: Update,
    *,
    timeout_s: float,
    progress: Progress = quiet,
    inventory: Inventory | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Verdict:
    """Send ``update`` to ``node`` (already watched: :meth:`Session.watch` on its ``status``)
    and wait up to ``timeout_s`` for its verdict; what it says goes into ``inventory``."""
    from provisioning.observe import learn

    step = f"{node}"
    parts = list(chunks(update.image, chunk_size))
    messages = [(nodewire.node_topic(site, node, "ota"), update.manifest)]
    messages += [(nodewire.node_topic(site, node, "ota/data"), p) for p in parts]
    started = session.clock()
    until = started + timeout_s

    def sent(n: int) -> None:
        progress(step, 0.5 * n / len(messages), f"sending {max(0, n - 1)}/{len(parts)} chunks")

    session.publish_many(messages, acked=sent)
    stage, running, reason = "sent", "", ""
    waiting = {
        "sent": "waiting for the node to check and install it",
        "installed": f"installed {update.version}; waiting for the node to restart into it",
        "booted": f"running {update.version}; waiting for its first acknowledged report",
    }
    while True:
        now = session.clock()
        progress(step, 0.5 + 0.5 * min(1.0, (now - started) / timeout_s), waiting[stage])
        heard = session.next(min(until, now + 0.5))
        if heard is None:
            if session.clock() >= until:
                return Verdict(
                    node,
                    "no-answer" if stage == "sent" else stage,
                    running,
                    waiting[stage],
                    len(parts),
                )
            continue
        f = heard.frame
        if heard.retained or heard.node != node or not isinstance(f, nodewire.StatusFrame):
            continue
        if inventory is not None:
            learn(inventory, heard)
        running, reason = _text(f.version), f.reason
        state = f.state
        if state is nodewire.NodeState.OTA_REFUSED:
            return Verdict(node, "refused", running, reason, len(parts))
        if state is nodewire.NodeState.ROLLED_BACK:
            return Verdict(node, "rolled-back", running, reason, len(parts))
        if state is nodewire.NodeState.OTA_APPLIED:
            stage = "installed"
        elif running == update.version and state is nodewire.NodeState.BOOT:
            stage = "booted"
        elif running == update.version and state is nodewire.NodeState.HEALTHY:
            progress(step, 1.0, f"kept {update.version}")
            return Verdict(node, "kept", running, reason, len(parts))
