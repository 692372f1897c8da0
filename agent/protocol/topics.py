"""MQTT topic names: ``edgefleet/v1/{device_id}/{kind}``."""

import enum
import re

from agent.protocol.errors import InvalidDeviceIdError, InvalidTopicError

TOPIC_PREFIX = "edgefleet/v1"
SHARED_GROUP = "edgefleet"
DEVICE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class TopicKind(enum.StrEnum):
    DIRECTIVE = "directive"
    STATUS = "status"
    TELEMETRY = "telemetry"
    PRESENCE = "presence"


def validate_device_id(device_id: object) -> str:
    """Return ``device_id`` if it is a valid id, else raise ``InvalidDeviceIdError``."""
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise InvalidDeviceIdError(
            f"invalid device id {device_id!r}: use 1-63 of [a-z0-9-], starting with [a-z0-9]"
        )
    return device_id


def topic_kind(kind: TopicKind | str) -> TopicKind:
    try:
        return TopicKind(kind)
    except ValueError:
        raise InvalidTopicError(f"unknown topic kind {kind!r}") from None


def device_topic(device_id: str, kind: TopicKind | str) -> str:
    """The topic of ``kind`` for one device."""
    return f"{TOPIC_PREFIX}/{validate_device_id(device_id)}/{topic_kind(kind).value}"


def parse_topic(topic: str) -> tuple[str, TopicKind]:
    """Split a device topic into (device id, kind)."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_PREFIX:
        raise InvalidTopicError(f"not an EdgeFleet topic: {topic!r}")
    kind = topic_kind(parts[3])
    return validate_device_id(parts[2]), kind


def subscription(kind: TopicKind | str, shared: bool = True) -> str:
    """Wildcard subscription for ``kind`` from every device, optionally shared."""
    pattern = f"{TOPIC_PREFIX}/+/{topic_kind(kind).value}"
    return f"$share/{SHARED_GROUP}/{pattern}" if shared else pattern
