"""The MQTT topic tree between gateways and the city brain.

::

    cityedge/v1/{site}/{gateway}/{kind}/{device}   envelopes of that kind about that device
    cityedge/v1/{site}/{gateway}/state             birth / death of the gateway (retained)
    cityedge/v1/{site}/{gateway}/cmd/req           signed commands to the gateway
    cityedge/v1/{site}/{gateway}/cmd/res           the gateway's replies

``kind`` is the envelope's kind (``telemetry``, ``alarm``, ``availability``, ...). A gateway
publishes only below its own ``cityedge/v1/{site}/{gateway}/`` prefix and subscribes only to
its own ``cmd/req``; the broker's ACL enforces this. Subscribers pick what they need with
wildcards, e.g. every alarm of a site: ``cityedge/v1/riverside/+/alarm/#``.

Each level is an :data:`~protocols.envelope.Ident`, so no level can contain '/', '+' or '#'.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from protocols.errors import TopicError

ROOT: Final = "cityedge/v1"
STATE: Final = "state"
COMMAND: Final = "cmd"
RESERVED_KINDS: Final = frozenset({STATE, COMMAND})
SUBSCRIBE_ALL: Final = f"{ROOT}/#"
#: every gateway's envelopes (and command topics, which the ingest tells apart): its subscription
DATA_FILTER: Final = f"{ROOT}/+/+/+/+"
#: every gateway's birth and death
STATE_FILTER: Final = f"{ROOT}/+/+/{STATE}"
#: every gateway's command requests (what the city brain may publish)
COMMAND_REQUEST_FILTER: Final = f"{ROOT}/+/+/{COMMAND}/req"

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check(name: str, value: str) -> str:
    if not _LEVEL.match(value):
        raise TopicError(
            f"{name} {value!r} cannot be a topic level: use 1-64 letters, digits, '_', '.', '-'"
        )
    return value


HOST_ROOT: Final = "cityedge/host"


def host_state_topic(group: str, worker: str) -> str:
    """``cityedge/host/{group}/{worker}``: an ingest worker's heartbeat (not retained). Gateways
    that wait for their city brain publish only while a worker of the group is alive."""
    return f"{HOST_ROOT}/{_check('group', group)}/{_check('worker', worker)}"


def host_state_filter(group: str) -> str:
    return f"{HOST_ROOT}/{_check('group', group)}/+"


def shared(group: str, topic_filter: str) -> str:
    """``$share/{group}/{filter}``: a shared subscription (MQTT 5.0, 4.8.2): the broker gives each
    message to one subscriber of ``group`` (the ingest workers share one work queue)."""
    return f"$share/{_check('group', group)}/{topic_filter}"


#: every ingest worker's heartbeat, of every group
HOST_FILTER: Final = f"{HOST_ROOT}/#"


def is_host_state(topic: str) -> bool:
    """True for a topic below ``cityedge/host/`` (an ingest worker's heartbeat)."""
    return topic.startswith(HOST_ROOT + "/")


def gateway_prefix(site: str, gateway: str) -> str:
    """``cityedge/v1/{site}/{gateway}`` — everything a gateway may publish is below it."""
    return f"{ROOT}/{_check('site', site)}/{_check('gateway', gateway)}"


def data_topic(site: str, gateway: str, kind: str, device: str) -> str:
    """Topic of an envelope of ``kind`` about ``device``."""
    if kind in RESERVED_KINDS:
        raise TopicError(f"kind {kind!r} is reserved by the topic tree")
    return f"{gateway_prefix(site, gateway)}/{_check('kind', kind)}/{_check('device', device)}"


def state_topic(site: str, gateway: str) -> str:
    return f"{gateway_prefix(site, gateway)}/{STATE}"


def command_request_topic(site: str, gateway: str) -> str:
    return f"{gateway_prefix(site, gateway)}/{COMMAND}/req"


def command_reply_topic(site: str, gateway: str) -> str:
    return f"{gateway_prefix(site, gateway)}/{COMMAND}/res"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic. ``kind`` is 'state' or 'cmd' for those branches; ``device`` then None
    for state, and 'req' / 'res' for commands."""

    site: str
    gateway: str
    kind: str
    device: str | None


def parse(topic: str) -> Topic:
    """Split a topic of the tree; raises :class:`~protocols.errors.TopicError` for anything else.
    The last topics parsed are remembered (a gateway parses the same few for every envelope it
    counts; a bounded cache, so topics from outside cannot grow it)."""
    return _parse(topic)


@functools.lru_cache(maxsize=1024)
def _parse(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != ROOT:
        raise TopicError(f"{topic!r} is not below {ROOT}/")
    site, gateway, kind, *rest = parts[2:]
    for name, value in (("site", site), ("gateway", gateway), ("kind", kind)):
        _check(name, value)
    if kind == STATE:
        if rest:
            raise TopicError(f"{topic!r}: nothing may follow '{STATE}'")
        return Topic(site, gateway, kind, None)
    if kind == COMMAND:
        if rest not in (["req"], ["res"]):
            raise TopicError(f"{topic!r}: a command topic ends in cmd/req or cmd/res")
        return Topic(site, gateway, kind, rest[0])
    if len(rest) != 1:
        raise TopicError(f"{topic!r}: expected {ROOT}/site/gateway/kind/device")
    return Topic(site, gateway, kind, _check("device", rest[0]))
