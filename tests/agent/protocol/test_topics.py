"""MQTT topics: ``edgefleet/v1/{device_id}/{kind}`` and the device id rules."""

import pytest

from agent.protocol.errors import InvalidDeviceIdError, InvalidTopicError
from agent.protocol.topics import TopicKind, device_topic, parse_topic, subscription, validate_device_id


@pytest.mark.parametrize("kind", list(TopicKind))
def test_build_and_parse(kind: TopicKind) -> None:
    topic = device_topic("pi-kitchen-01", kind)
    assert topic == f"edgefleet/v1/pi-kitchen-01/{kind.value}"
    assert parse_topic(topic) == ("pi-kitchen-01", kind)


def test_kind_may_be_given_as_text() -> None:
    assert device_topic("d1", "presence") == "edgefleet/v1/d1/presence"


@pytest.mark.parametrize("device_id", ["a", "0", "pi-1", "a" * 63, "9-lives", "edge-device-" + "x" * 51])
def test_valid_device_ids(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize("device_id", [
    "", "-leading-dash", "Upper", "pi_1", "pi.1", "pi/1", "pi+", "#", "+", "a" * 64, "pi 1", "pi\n", "é",
    "$SYS", None, 12, ["pi"],
])
def test_invalid_device_ids(device_id: object) -> None:
    with pytest.raises(InvalidDeviceIdError):
        validate_device_id(device_id)
    if isinstance(device_id, str):
        with pytest.raises(InvalidDeviceIdError):
            device_topic(device_id, TopicKind.STATUS)


@pytest.mark.parametrize("topic", [
    "edgefleet/v1/pi/directive/extra", "edgefleet/v2/pi/status", "other/v1/pi/status", "edgefleet/v1/pi",
    "edgefleet/v1/pi/unknown", "", "/edgefleet/v1/pi/status", "edgefleet/v1/#",
])
def test_foreign_topics(topic: str) -> None:
    with pytest.raises(InvalidTopicError):
        parse_topic(topic)


@pytest.mark.parametrize("topic", [
    "edgefleet/v1/Pi/status", "edgefleet/v1//status", "edgefleet/v1/p_i/telemetry", "edgefleet/v1/+/status",
])
def test_topics_with_invalid_device_ids(topic: str) -> None:
    with pytest.raises(InvalidDeviceIdError):
        parse_topic(topic)


def test_unknown_kind_when_building() -> None:
    with pytest.raises(InvalidTopicError):
        device_topic("pi", "firmware")
    with pytest.raises(InvalidTopicError):
        subscription("firmware")


def test_subscriptions() -> None:
    assert subscription(TopicKind.STATUS) == "$share/edgefleet/edgefleet/v1/+/status"
    assert subscription("telemetry", shared=False) == "edgefleet/v1/+/telemetry"
