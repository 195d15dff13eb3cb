"""The node's configuration: ``config.json`` on its filesystem, written by ``cityedge provision``.

Checked once at boot; a bad file stops the node with a message naming the key (a node that runs
on a half-understood config is worse than one that does not start)::

    {"site": "riverside", "node": "bin-17", "kind": "bin-fill",
     "broker": {"host": "10.0.0.2", "port": 8883, "tls": true, "keepalive_s": 30},
     "wifi": {"ssid": "...", "psk": "..."},
     "report_interval_s": 60, "queue_max": 32, "watchdog_ms": 30000,
     "trusted_keys": {"ops-2026": "<raw Ed25519 public key, base64url>"}, "gateway": "gw-1",
     "app": {"pins": {"trigger": 5, "echo": 18, "temp": 34}, "empty_mm": 1200, "full_mm": 150}}

``app`` is checked against the app's declared settings (:mod:`cenode.appschema`, which the tool
reads too): a misspelt key, a wrong type or a value out of range stops the node here, naming the
key, rather than somewhere in the app. ``gateway`` (optional) names the gateway whose command
key, delegated by a trusted site key, the node obeys (:mod:`cenode.delegation`). TLS material
is in ``certs/``: ``ca.der``, ``node.der``, ``node.key.der``.
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
    budget = doc.setdefault("queue_bytes", 65536)
    if not isinstance(budget, int) or budget < 4096:
        raise ConfigError("config.json: queue_bytes (the flash queue) must be at least 4096")
    doc.setdefault("watchdog_ms", 0)
    gateway = doc.setdefault("gateway", None)  # whose delegated command key this node obeys
    if gateway is not None and (not isinstance(gateway, str) or not gateway):
        raise ConfigError("config.json: gateway must be the name of the node's gateway")
    doc["app"] = check_app(doc["kind"], doc.get("app", {}))
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


def _number(value, spec: dict, where: str, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(where + " must be " + ("an integer" if integer else "a number"))
    unit = spec.get("unit", "")
    if not spec["min"] <= value <= spec["max"]:
        raise ConfigError(where + " must be " + str(spec["min"]) + "-" + str(spec["max"]) + (" " + unit if unit else ""))
    return value


def _two_point(value, spec: dict, chan: dict, where: str):
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(where + " must be two [mV, value] points")
    for i, point in enumerate(value):
        at = where + "[" + str(i) + "]"
        if not isinstance(point, list) or len(point) != 2:
            raise ConfigError(at + " must be [mV, value]")
        _number(point[0], spec, at + "[0]")
        _number(point[1], chan, at + "[1]")
    if value[0][0] == value[1][0]:
        raise ConfigError(where + ": the two points need different mV")
    return value


def check_app(kind: str, app) -> dict:
    """``app`` with defaults filled in; ConfigError names the first wrong setting."""
    from cenode.appschema import LARGER, PIN_MAX, SETTINGS

    schema = SETTINGS.get(kind)
    if schema is None:
        raise ConfigError("config.json: kind " + kind + " is not one of " + ", ".join(SETTINGS))
    if not isinstance(app, dict):
        raise ConfigError("config.json: app must be an object")
    for key in app:
        if key not in schema:
            raise ConfigError("config.json: app." + key + " is not a " + kind + " setting (" + ", ".join(schema) + ")")
    out = {}
    for key, spec in schema.items():
        where = "config.json: app." + key
        kind_of = spec["type"]
        if kind_of == "pins":
            pins = app.get(key, {})
            if not isinstance(pins, dict):
                raise ConfigError(where + " must be an object of GPIO numbers")
            for name, gpio in pins.items():
                if name not in spec["names"]:
                    raise ConfigError(where + "." + name + " is not a pin of " + kind)
                _number(gpio, {"min": 0, "max": PIN_MAX}, where + "." + name, True)
            out[key] = pins
        elif kind_of == "two-point":
            given = app.get(key, {})
            if not isinstance(given, dict):
                raise ConfigError(where + " must be an object")
            cal = {}
            for chan in given:
                if chan not in spec["of"]:
                    raise ConfigError(where + "." + chan + " is not a probe of " + kind)
            for chan, chan_spec in spec["of"].items():
                cal[chan] = _two_point(given.get(chan, chan_spec["default"]), spec, chan_spec, where + "." + chan)
            out[key] = cal
        else:
            out[key] = _number(app.get(key, spec["default"]), spec, where, kind_of == "int")
    for big, small in LARGER.get(kind, ()):
        if out[big] <= out[small]:
            raise ConfigError("config.json: app." + big + " must be larger than app." + small)
    return out


def load(root: str) -> dict:
    try:
        with open(root + "/config.json") as f:
            doc = json.load(f)
    except OSError as err:
        raise ConfigError("no config.json on the node: provision it first")
    except ValueError as err:
        raise ConfigError("config.json is not valid JSON")
    return check(doc)
