"""Commands signed by the node's gateway: the site's delegation of the gateway's command key
(the node's half of ``protocols/delegation.py``; rules in ``docs/protocol.md``).

A command whose key id is not one of the site keys the node trusts must carry a delegation: an
envelope the site signed (purpose ``delegation``) saying which gateway holds which key for
commands. It is checked once (one Ed25519 verification) and the key kept by key id in
:class:`Keys` until the delegation expires; later commands with that key id cost one
verification, the command's own. Imported by :mod:`cenode.remote` only for such commands.

Refusals: ``bad-delegation`` (no delegation, malformed, not signed by a trusted site key,
expired, for another site, purpose or key id, a weak key) and ``wrong-gateway`` (a delegation
the site really signed, for a gateway other than the node's ``config.json`` ``gateway``).
"""

import json

from cenode import ed25519, signed
from cenode.util import b64url_decode

BAD = "bad-delegation"
WRONG_GATEWAY = "wrong-gateway"
CACHED = 4  # delegated keys kept (a gateway rotates its key now and then: old and new)


class Keys:
    """Delegated command keys verified so far: kid -> (raw key, expiry), at most ``CACHED``."""

    def __init__(self) -> None:
        self.keys: dict = {}

    def key_for(self, doc: dict, site_keys: dict, site: str, gateway, now: int) -> dict:
        """``{kid: raw key}`` to verify the command ``doc`` with; :class:`signed.Refused`."""
        kid = doc.get("kid")
        if not isinstance(kid, str):
            raise signed.Refused("malformed", "field kid missing or of the wrong type")
        known = self.keys.get(kid)
        if known is not None:
            if known[1] > now:
                return {kid: known[0]}
            del self.keys[kid]
            raise signed.Refused(BAD, "expired " + str(now - known[1]) + " s ago")
        raw, exp = check(doc.get("delegation"), site_keys, site, gateway, kid, now)
        self.keys[kid] = (raw, exp)
        while len(self.keys) > CACHED:  # forget the one expiring first
            soonest = min(self.keys, key=lambda k: self.keys[k][1])
            del self.keys[soonest]
        return {kid: raw}


def check(envelope, site_keys: dict, site: str, gateway, kid: str, now: int) -> tuple:
    """``(raw key, expiry)`` of a good delegation of ``kid`` to ``gateway``."""
    if envelope is None:
        raise signed.Refused(BAD, "key " + kid + " is not the site's and no delegation came")
    try:
        body, _site_kid, exp, _nonce = signed.verify_doc(envelope, "delegation", site_keys, now)
    except signed.Refused as err:
        raise signed.Refused(BAD, str(err))
    try:
        doc = json.loads(body)
    except ValueError:
        raise signed.Refused(BAD, "malformed: body is not JSON")
    if not isinstance(doc, dict):
        raise signed.Refused(BAD, "malformed: body is not an object")
    for name in ("site", "gateway", "purpose", "kid", "key"):
        if not isinstance(doc.get(name), str):
            raise signed.Refused(BAD, "malformed: " + name + " missing")
    if doc["purpose"] != "command":
        raise signed.Refused(BAD, "wrong-purpose: delegates " + doc["purpose"])
    try:
        raw = b64url_decode(doc["key"])
    except ValueError:
        raise signed.Refused(BAD, "malformed: key is not base64url")
    if len(raw) != 32 or ed25519.weak_key(raw):
        raise signed.Refused(BAD, "weak or malformed delegated key")
    if doc["site"] != site:
        raise signed.Refused(BAD, "for site " + doc["site"] + ", not " + site)
    if doc["kid"] != kid:
        raise signed.Refused(BAD, "for key " + doc["kid"] + ", not " + kid)
    if doc["gateway"] != gateway:
        mine = "this node obeys " + gateway if gateway else "this node has no gateway"
        raise signed.Refused(WRONG_GATEWAY, "key of " + doc["gateway"] + "; " + mine)
    return raw, exp
