"""The node's configuration: ``config.json`` on its filesystem, written by ``cityedge provision``.

Checked once at boot; a bad file stops the node with a message naming the key (a node that runs
on a half-understood config is worse than one that does not start)::

    {"site": "riverside", "node": "bin-17", "kind": "bin-fill",
     "broker": {"host": "10.0.0.2", "port": 8883, "tls": true, "keepalive_s": 30},
     "wifi": {"ssid": "...", "psk": "..."},
     "report_interval_s": 60, "queue_max": 32, "watchdog_ms": 30000,
     "trusted_keys": {"ops-2026": "<raw Ed25519 public key, base64url>"},
     "app": {"pins": {"trigger": 5, "echo": 18, "temp": 34}, "empty_mm": 1200, "full_mm": 150}}

TLS material is in ``certs/``: ``ca.der``, ``node.der``, ``node.key.der``.
"""

import json

from cenode import ed25519
from cenode.util import b64url_decode


class ConfigError(Exception):
    pass


def _get(doc: dict, key: str, kind: type, where: str = ""):
    if key not in doc:
        raise ConfigError("config.json: " + where + key + " is missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError("config.json: " + where + key + " must be " + kind.__name__)
    return value


def check(doc: dict) -> dict:
    """The config with defaults filled in; ConfigError names the first problem."""
    if not isinstance(doc, dict):
        raise ConfigError("config.json must hold a JSON object")
    for key in ("site", "node", "kind"):
        _get(doc, key, str)
    broker = _get(doc, "broker", dict)
    _get(broker, "host", str, "broker.")
    port = _get(broker, "port", int, "broker.")
    if not 0 < port < 65536:
        raise ConfigError("config.json: broker.port must be 1-65535")
    broker.setdefault("tls", True)
    broker.setdefault("keepalive_s", 30)
    interval = doc.setdefault("report_interval_s", 60)
    if not isinstance(interval, (int, float)) or interval <= 0:
        raise ConfigError("config.json: report_interval_s must be a positive number")
    doc.setdefault("queue_max", 32)
    doc.setdefault("watchdog_ms", 0)
    doc.setdefault("app", {})
    keys = {}
    for kid, text in doc.get("trusted_keys", {}).items():
        try:
            raw = b64url_decode(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError("config.json: trusted_keys." + kid + " is not a 32-byte base64url key")
        if ed25519.weak_key(raw):
            raise ConfigError(
                "config.json: trusted_keys." + kid + " is refused: all zero, small-order or not"
                " a canonical point (anyone could forge signatures for it); provision the node again"
            )
        keys[kid] = raw
    doc["trusted_keys"] = keys
    return doc


def load(root: str) -> dict:
    try:
        with open(root + "/config.json") as f:
            doc = json.load(f)
    except OSError as err:
        raise ConfigError("no config.json on the node: provision it first")
    except ValueError as err:
        raise ConfigError("config.json is not valid JSON")
    return check(doc)
