"""Gateway command keys: the site certifies a gateway's key for commands to its own nodes.

The hierarchy (``docs/protocol.md``, "Commands to a node"): the site's key (``ota.key``, the
key every node trusts from provisioning) signs a **delegation**: a signed envelope
(:mod:`protocols.signed`, purpose ``delegation``, the site's key id, ``exp`` = the end of its
validity) whose body is::

    {"site": "riverside", "gateway": "gw-1", "purpose": "command",
     "kid": "gw-1-cmd-3f2a9c1e", "key": "<raw Ed25519 public key, base64url>"}

The gateway signs each command to a node with its command key (purpose ``command``, ``kid`` =
the delegated key id) and carries the delegation beside the signed fields, as
``"delegation": {...}`` (an object; the command's signature does not cover it, the site's
does). A node learns its gateway at provisioning (``config.json`` ``gateway``) and accepts such
a command only when the delegation is signed by a site key it trusts, for its site, for
*its* gateway, for purpose ``command``, for the command's key id, not expired, and the command
itself verifies with the delegated key. It verifies a delegation once and keeps the key by key
id until the delegation expires (a small cache), so later commands cost one verification.

Refusals (the node's reply, and :class:`DelegationRefused` here) say ``bad-delegation``
(malformed, a signature that does not match, an unknown site key, the wrong purpose, another
site or key id, a weak key, expired) or ``wrong-gateway`` (a delegation the site really signed,
for another gateway).

The node has its own verifier (``firmware/cenode/delegation.py``); both are checked against the
shared vectors ``protocols/vectors/delegation.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols import boundedjson, ed25519, signed
from protocols.errors import DecodeError, ProtocolError

PURPOSE: Final = "delegation"
BAD: Final = "bad-delegation"
WRONG_GATEWAY: Final = "wrong-gateway"
MAX_DELEGATION_BYTES: Final = 2048


class DelegationRefused(ProtocolError):
    """``reason`` is ``bad-delegation`` or ``wrong-gateway``; the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Delegation:
    """What a delegation says (verified or only read, as the function that made it says)."""

    site: str
    gateway: str
    kid: str
    key: bytes  # raw Ed25519 public key
    expires_at: int
    envelope: dict[str, Any]  # the signed envelope, as carried in a command


def command_kid(gateway: str, public: bytes) -> str:
    """The key id of a gateway's command key: its name and a hash of the key (a new key, a new
    id: a node's cache by key id never mixes two keys)."""
    return f"{gateway[:40]}-cmd-{hashlib.sha256(public).hexdigest()[:8]}"


def issue(
    *,
    site_key: Ed25519PrivateKey,
    site_kid: str,
    site: str,
    gateway: str,
    gateway_key: Ed25519PublicKey,
    expires_at: int,
    nonce: bytes | None = None,
) -> bytes:
    """The delegation of ``gateway_key`` to ``gateway`` for commands, signed by the site."""
    raw = signed.public_key_raw(gateway_key)
    body = {
        "site": site,
        "gateway": gateway,
        "purpose": "command",
        "kid": command_kid(gateway, raw),
        "key": signed.b64url(raw),
    }
    return signed.sign(
        json.dumps(body, separators=(",", ":")).encode(),
        purpose=PURPOSE,
        kid=site_kid,
        key=site_key,
        expires_at=expires_at,
        nonce=nonce,
    )


def _body(envelope: Mapping[str, Any], body: bytes, exp: int) -> Delegation:
    try:
        doc = boundedjson.loads(body, max_bytes=MAX_DELEGATION_BYTES)
    except DecodeError as err:
        raise DelegationRefused(BAD, "malformed: body is not JSON") from err
    if not isinstance(doc, dict):
        raise DelegationRefused(BAD, "malformed: body is not an object")
    fields = {}
    for name in ("site", "gateway", "purpose", "kid", "key"):
        value = doc.get(name)
        if not isinstance(value, str):
            raise DelegationRefused(BAD, f"malformed: {name} missing")
        fields[name] = value
    if fields["purpose"] != "command":
        raise DelegationRefused(BAD, f"wrong-purpose: delegates {fields['purpose']!r}")
    try:
        raw = signed.unb64url(fields["key"])
    except ValueError as err:
        raise DelegationRefused(BAD, "malformed: key is not base64url") from err
    if len(raw) != 32 or ed25519.key_problem(raw) is not None:
        raise DelegationRefused(BAD, "weak or malformed delegated key")
    return Delegation(fields["site"], fields["gateway"], fields["kid"], raw, exp, dict(envelope))


def read(data: bytes | str) -> Delegation:
    """What a delegation file says, its site signature not checked (the gateway holding it has
    no use for the site's key: the nodes check it). :class:`DelegationRefused` when it is not
    one."""
    try:
        doc = boundedjson.loads(data, max_bytes=MAX_DELEGATION_BYTES)
    except DecodeError as err:
        raise DelegationRefused(BAD, f"malformed: not JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("purpose") != PURPOSE:
        raise DelegationRefused(BAD, "malformed: not a delegation envelope")
    exp = doc.get("exp")
    body = doc.get("body")
    if not isinstance(exp, int) or isinstance(exp, bool) or not isinstance(body, str):
        raise DelegationRefused(BAD, "malformed: exp or body missing")
    try:
        raw_body = signed.unb64url(body)
    except ValueError as err:
        raise DelegationRefused(BAD, "malformed: body is not base64url") from err
    return _body(doc, raw_body, exp)


def verify(
    envelope: Mapping[str, Any] | bytes | str,
    *,
    site_keys: Mapping[str, Ed25519PublicKey],
    site: str,
    gateway: str | None,
    kid: str,
    now: float,
) -> Delegation:
    """A delegation checked as a node checks it: the site's signature, then what it says
    (for ``site``, for the command's key id ``kid``, for ``gateway``: the node's own)."""
    data = envelope if isinstance(envelope, bytes | str) else json.dumps(envelope)
    try:
        got = signed.verify(data, purpose=PURPOSE, keys=site_keys, now=now, max_ttl_s=None)
    except signed.SignatureRefused as err:
        raise DelegationRefused(BAD, str(err)) from err
    d = _body(json.loads(data), got.body, got.exp)
    if d.site != site:
        raise DelegationRefused(BAD, f"for site {d.site}, not {site}")
    if d.kid != kid:
        raise DelegationRefused(BAD, f"for key {d.kid}, not {kid}")
    if d.gateway != gateway:
        mine = f"this node obeys {gateway}" if gateway else "this node has no gateway"
        raise DelegationRefused(WRONG_GATEWAY, f"key of {d.gateway}; {mine}")
    return d


def sign_command(
    body: bytes,
    *,
    key: Ed25519PrivateKey,
    delegation: Delegation,
    expires_at: int,
    nonce: bytes | None = None,
) -> bytes:
    """A command signed with a gateway's command key, its delegation beside it."""
    doc = json.loads(
        signed.sign(
            body,
            purpose="command",
            kid=delegation.kid,
            key=key,
            expires_at=expires_at,
            nonce=nonce,
        )
    )
    doc["delegation"] = delegation.envelope
    return json.dumps(doc, separators=(",", ":")).encode()


def verify_command(
    data: bytes | str,
    *,
    site_keys: Mapping[str, Ed25519PublicKey],
    site: str,
    gateway: str | None,
    now: float,
) -> signed.Verified:
    """A command checked as a node checks it (the gateway's tests and tools; the node has its
    own code): signed by a site key, or by a key the site delegated to ``gateway``. Raises
    :class:`DelegationRefused` or :class:`~protocols.signed.SignatureRefused`."""
    doc = json.loads(data)
    kid = doc.get("kid") if isinstance(doc, dict) else None
    keys = dict(site_keys)
    if isinstance(kid, str) and kid not in site_keys and "sig" in doc:
        d = verify(
            doc.get("delegation"), site_keys=site_keys, site=site, gateway=gateway, kid=kid, now=now
        )
        keys = {kid: signed.public_key_from_raw(d.key)}
    return signed.verify(data, purpose="command", keys=keys, now=now, max_ttl_s=300)
