"""The MQTT topic tree."""

from __future__ import annotations

import pytest

from protocols import topics
from protocols.errors import TopicError


def test_builders() -> None:
    assert (
        topics.data_topic("riverside", "gw-1", "telemetry", "sonde-1")
        == "cityedge/v1/riverside/gw-1/telemetry/sonde-1"
    )
    assert topics.state_topic("s", "g") == "cityedge/v1/s/g/state"
    assert topics.command_request_topic("s", "g") == "cityedge/v1/s/g/cmd/req"
    assert topics.command_reply_topic("s", "g") == "cityedge/v1/s/g/cmd/res"
    assert topics.gateway_prefix("s", "g") == "cityedge/v1/s/g"


PARSE = [
    ("cityedge/v1/s/g/telemetry/d", topics.Topic("s", "g", "telemetry", "d")),
    ("cityedge/v1/s/g/alarm/d.2", topics.Topic("s", "g", "alarm", "d.2")),
    ("cityedge/v1/s/g/state", topics.Topic("s", "g", "state", None)),
    ("cityedge/v1/s/g/cmd/req", topics.Topic("s", "g", "cmd", "req")),
]


@pytest.mark.parametrize(("topic", "parsed"), PARSE)
def test_parse(topic: str, parsed: topics.Topic) -> None:
    assert topics.parse(topic) == parsed


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "cityedge/v1",
        "cityedge/v2/s/g/telemetry/d",
        "other/v1/s/g/telemetry/d",
        "cityedge/v1/s/g/telemetry",
        "cityedge/v1/s/g/telemetry/d/extra",
        "cityedge/v1/s/g/state/x",
        "cityedge/v1/s/g/cmd/other",
        "cityedge/v1/s/+/telemetry/d",
        "cityedge/v1/s/g/telemetry/#",
        "cityedge/v1/ s/g/telemetry/d",
    ],
)
def test_parse_refuses(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(topic)


@pytest.mark.parametrize(
    ("kind", "device"),
    [("state", "d"), ("cmd", "d"), ("telemetry", "a/b"), ("telemetry", "+"), ("x y", "d")],
)
def test_builders_refuse_what_would_break_the_tree(kind: str, device: str) -> None:
    with pytest.raises(TopicError):
        topics.data_topic("s", "g", kind, device)


def test_filters_and_the_heartbeat_branch() -> None:
    assert topics.DATA_FILTER == "cityedge/v1/+/+/+/+"
    assert topics.STATE_FILTER == "cityedge/v1/+/+/state"
    assert topics.COMMAND_REQUEST_FILTER == "cityedge/v1/+/+/cmd/req"
    assert topics.HOST_FILTER == "cityedge/host/#"
    assert topics.shared("ingest", topics.DATA_FILTER) == "$share/ingest/cityedge/v1/+/+/+/+"
    with pytest.raises(TopicError, match="group"):
        topics.shared("a/b", topics.DATA_FILTER)
    assert topics.is_host_state(topics.host_state_topic("ingest", "w-1"))
    assert not topics.is_host_state("cityedge/hostile/x")
    assert not topics.is_host_state(topics.state_topic("s", "g"))


def test_parse_remembers_but_still_refuses() -> None:
    topic = "cityedge/v1/s/g/telemetry/d"
    assert topics.parse(topic) is topics.parse(topic)
    for _ in range(2):  # a refusal is not remembered as anything else
        with pytest.raises(TopicError):
            topics.parse("cityedge/v1/s/g/telemetry")
