"""MQTT message bodies: exact round trips and strict decoding."""

import json
from typing import Any

import pytest

from agent.protocol.canonical import canonical_bytes
from agent.protocol.errors import DocumentTooLargeError, InvalidDeviceIdError, MalformedDocumentError
from agent.protocol.messages import (
    DEPLOYMENT_STATES,
    MAX_DEVICE_MESSAGE_BYTES,
    DirectiveMessage,
    InstalledModel,
    PresenceMessage,
    StatusMessage,
)
from tests.agent.protocol.factories import DEVICE_ID, Scenario

MODEL = InstalledModel("digits", 3, "onnx-fp32", "ab" * 32)


def test_directive_message_round_trip(scene: Scenario) -> None:
    message = DirectiveMessage(scene.directive_document, scene.release_document)
    assert DirectiveMessage.decode(message.encode()) == message


def test_directive_message_joined_from_canonical_parts_is_the_encoding(scene: Scenario) -> None:
    message = DirectiveMessage(scene.directive_document, scene.release_document)
    joined = DirectiveMessage.join(canonical_bytes(scene.directive_document), canonical_bytes(scene.release_document))
    assert joined == message.encode()
    assert DirectiveMessage.decode(joined) == message
    assert message.encode() == canonical_bytes({"directive": scene.directive_document,
                                                "release": scene.release_document})


@pytest.mark.parametrize("state", DEPLOYMENT_STATES)
def test_status_message_round_trip(state: str) -> None:
    message = StatusMessage(DEVICE_ID, state, 7, "digits", 3, "onnx-fp32", "health check passed", 1780000000.125)
    assert StatusMessage.decode(message.encode()) == message


def test_status_message_with_only_required_fields_round_trips() -> None:
    message = StatusMessage(DEVICE_ID, "idle", 0, timestamp=1780000000.0)
    assert StatusMessage.decode(message.encode()) == message


def test_presence_message_round_trip() -> None:
    message = PresenceMessage(DEVICE_ID, True, "0.1.0", 12.5, (MODEL,), "succeeded", 1780000000.5)
    assert PresenceMessage.decode(message.encode()) == message
    offline = PresenceMessage(DEVICE_ID, False, timestamp=1780000001.0)
    assert PresenceMessage.decode(offline.encode()) == offline


def test_installed_model_round_trip() -> None:
    assert InstalledModel.from_dict(json.loads(canonical_bytes(MODEL.to_dict()))) == MODEL


def status(**changes: Any) -> bytes:
    body = json.loads(StatusMessage(DEVICE_ID, "downloading", 7, "digits", 3, timestamp=1780000000.0).encode())
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize("changes", [
    {"type": "presence"}, {"type": ...}, {"state": "exploded"}, {"state": 3}, {"sequence": -1},
    {"sequence": "7"}, {"sequence": True}, {"release_version": 0}, {"release_name": "a b"},
    {"timestamp": "now"}, {"timestamp": True}, {"timestamp": -1}, {"timestamp": 1e12}, {"device_id": ...},
    {"reason": ""}, {"reason": "x" * 2001}, {"extra": 1}, {"variant": ["onnx"]},
], ids=str)
def test_malformed_status_messages(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedDocumentError):
        StatusMessage.decode(status(**changes))


def test_status_message_from_an_invalid_device() -> None:
    with pytest.raises(InvalidDeviceIdError):
        StatusMessage.decode(status(device_id="pi/+"))


def presence(**changes: Any) -> bytes:
    body = json.loads(PresenceMessage(DEVICE_ID, True, "0.1.0", 3.0, (MODEL,), "idle", 1780000000.0).encode())
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize("changes", [
    {"type": "status"}, {"online": "yes"}, {"online": 1}, {"online": ...}, {"uptime_s": -1}, {"uptime_s": "1"},
    {"uptime_s": False}, {"deployment_state": "dancing"}, {"deployment_state": ["idle"]}, {"models": "digits"},
    {"models": [{"name": "digits"}]}, {"models": [dict(MODEL.to_dict(), version=-3)]}, {"timestamp": None},
    {"agent_version": 1}, {"extra": True},
], ids=str)
def test_malformed_presence_messages(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedDocumentError):
        PresenceMessage.decode(presence(**changes))


@pytest.mark.parametrize("payload", [
    b"", b"[]", b'{"directive":{}}', b'{"directive":{},"release":[]}', b'{"directive":{},"release":{},"x":1}',
    b'{"directive":{},"directive":{},"release":{}}', b"\x00\x01",
])
def test_malformed_directive_messages(payload: bytes) -> None:
    with pytest.raises(MalformedDocumentError):
        DirectiveMessage.decode(payload)


def test_oversized_device_messages() -> None:
    payload = status(reason="x" * 2000)[:-1] + b"," + b'"pad":"' + b"x" * MAX_DEVICE_MESSAGE_BYTES + b'"}'
    with pytest.raises(DocumentTooLargeError):
        StatusMessage.decode(payload)
    with pytest.raises(DocumentTooLargeError):
        PresenceMessage.decode(payload)
