"""What a node does with messages from the gateway: signed commands and OTA updates.

Imported by :meth:`cenode.node.Node.on_message` when the first such message arrives, so a node
that only reports never holds this code, Ed25519, SHA-512 or the OTA code in its heap.
"""

from cenode import wire

COMMAND_MAX_TTL_S = 300


def handle(node, channel: str, payload: bytes) -> None:
    if channel != "ota/data":
        import gc

        gc.collect()  # Ed25519 in Python allocates many big integers: start from a clean heap
    if channel == "cmd":
        command(node, payload)
    elif channel == "ota":
        ota_offer(node, payload)
    else:
        ota_chunk(node, payload)


def _ota(node):
    if node.ota is None:
        from cenode.ota import Ota

        node.ota = Ota(node.root, node.config["trusted_keys"])
    return node.ota


def _delegated(node):
    keys = getattr(node, "delegated", None)
    if keys is None:
        from cenode.delegation import Keys

        keys = node.delegated = Keys()  # kept on the node: a delegation is verified once
    return keys


def reply(node, nonce: str, result: int, message: str) -> None:
    frame = wire.encode_reply(node.next_seq(), node.now(), nonce, result, message)
    node.link.publish(node.topic("res"), frame)


def command(node, payload: bytes) -> None:
    import json

    from cenode import signed

    now = node.now() or None
    nonce = ""
    try:
        if now is None:
            raise signed.Refused("expired", "the node's clock is not set; cannot check expiry")
        doc = signed.parse(payload)
        if isinstance(doc.get("nonce"), str) and len(doc["nonce"]) <= 64:
            nonce = doc["nonce"]  # a refusal echoes it too: the sender matches replies by nonce
        keys = node.config["trusted_keys"]
        kid = doc.get("kid")
        if isinstance(kid, str) and kid not in keys and "sig" in doc:  # a gateway's, delegated
            keys = _delegated(node).key_for(doc, keys, node.site, node.config.get("gateway"), now)
        body, _kid, exp, nonce = signed.verify_doc(doc, "command", keys, now)
        if exp - now > COMMAND_MAX_TTL_S:
            raise signed.Refused("too-long", "commands may be valid for 300 s at most")
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("node") != node.name:
            raise signed.Refused("malformed", "the command is not addressed to this node")
        if node.nonces is None:
            node.nonces = signed.Nonces(16)
        node.nonces.check_and_add(nonce, exp)
    except signed.Refused as err:
        node.log("command refused:", err)
        reply(node, nonce, wire.REFUSED, str(err))
        return
    except ValueError:
        reply(node, nonce, wire.REFUSED, "malformed: body is not JSON")
        return
    result, message = node.app.command(doc)
    node.log("command", doc.get("action"), "->", message)
    reply(node, nonce, result, message)
    node.next_report = node.ticks()  # report the new state at once


def ota_offer(node, payload: bytes) -> None:
    from cenode.ota import OtaRefused

    try:
        version = _ota(node).offer(payload, node.now() or None)
    except OtaRefused as err:
        node.log("update refused:", err)
        node.send_status(wire.OTA_REFUSED, str(err))
        return
    node.log("update to", ".".join(str(v) for v in version), "accepted; receiving")


def ota_chunk(node, payload: bytes) -> None:
    from cenode.ota import OtaRefused

    try:
        if not _ota(node).chunk(payload):
            return
        version = _ota(node).install()
    except OtaRefused as err:
        node.log("update refused:", err)
        node.send_status(wire.OTA_REFUSED, str(err))
        return
    node.log("update", version, "installed; restarting")
    node.send_status(wire.OTA_APPLIED, version)
    node.restart_due = True
