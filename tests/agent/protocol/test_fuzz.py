"""Fuzzing: random and mutated documents raise only the protocol's own errors, never anything else.

Each property feeds untrusted input to the parsers and verification entry points and lets any
exception other than a ``ProtocolError`` fail the test.
"""

import copy
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.protocol.canonical import canonical_bytes, parse_json
from agent.protocol.envelope import Envelope, sign_envelope
from agent.protocol.errors import ProtocolError
from agent.protocol.messages import DirectiveMessage, PresenceMessage, StatusMessage
from agent.protocol.metadata import ArtifactVariant, Directive, Release, Root
from agent.protocol.topics import parse_topic, validate_device_id
from agent.protocol.verify import load_trusted_root, verify_root_update, verify_update
from tests.agent.protocol.factories import NOW, device, make_root, scenario

SCENE = scenario()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELD_NAMES = sorted({
    "_type", "spec_version", "version", "expires", "keys", "roles", "keyids", "threshold", "keytype", "public",
    "name", "variants", "inputs", "outputs", "created", "reference_profile_sha256", "path", "runtime",
    "precision", "sha256", "length", "compatibility", "arch", "min_ram_mb", "dtype", "shape", "device_id",
    "sequence", "action", "release", "issued", "signed", "signatures", "keyid", "sig", "directive", "type",
    "state", "release_name", "release_version", "variant", "reason", "timestamp", "online", "agent_version",
    "uptime_s", "models", "deployment_state", "root", "rollout",
})

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
    | st.text(max_size=24) | st.sampled_from(["root", "release", "directive", "install", "rollback", "ed25519",
                                             "onnxruntime", "tflite", "2026-01-01T00:00:00Z", "ab" * 32,
                                             "lone \ud800 surrogate"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=24,
)

# JSON text, always well-formed, with what a Python value cannot express: NaN, overflowing floats,
# integers past the int-to-str digit limit, escaped lone surrogates, duplicate keys.
number_text = st.integers().map(str) | st.sampled_from(
    ["0", "-0", "1.5", "1e400", "-1e400", "9" * 4400, "NaN", "Infinity", "-Infinity", "1E+2"])
string_text = keys.map(json.dumps) | st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"', '"\u00e9"'])
json_text = st.recursive(
    number_text | string_text | st.sampled_from(["true", "false", "null"]),
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(string_text, children), max_size=5).map(
            lambda pairs: "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}")
    ),
    max_leaves=20,
)


def only_protocol_errors(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except ProtocolError:
        pass


def parse_everything(document: Any) -> None:
    for parse in (Root.from_dict, Release.from_dict, Directive.from_dict, Envelope.from_dict):
        only_protocol_errors(parse, document)
    only_protocol_errors(ArtifactVariant.from_dict, document, "variant")
    only_protocol_errors(load_trusted_root, document, NOW)
    only_protocol_errors(verify_root_update, SCENE.root, document, NOW)
    only_protocol_errors(verify_update, SCENE.root, document, SCENE.release_document, device(), 0, NOW)
    only_protocol_errors(verify_update, SCENE.root, SCENE.directive_document, document, device(), 0, NOW)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a JSON value, as a tuple of keys and indices."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with one to three locations deleted, replaced or retyped."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        locations = [path for path in paths(document) if path]
        if not locations:
            break
        *parents, last = draw(st.sampled_from(locations))
        container: Any = document
        for part in parents:
            container = container[part]
        operation = draw(st.sampled_from(["delete", "replace", "duplicate"]))
        if operation == "delete":
            del container[last]
        elif operation == "replace":
            container[last] = draw(json_values)
        else:
            container[last] = [container[last]] if draw(st.booleans()) else {"value": container[last]}
    return document


# -- random input ----------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    only_protocol_errors(parse_json, data)
    for decode in (DirectiveMessage.decode, StatusMessage.decode, PresenceMessage.decode):
        only_protocol_errors(decode, data)


def parse_accepted(data: bytes) -> Any:
    """Parse ``data``; whatever the parser accepts must also be signable (canonical bytes)."""
    try:
        parsed = parse_json(data)
    except ProtocolError:
        return None
    assert parse_json(canonical_bytes(parsed)) == parsed
    return parsed


@FUZZ
@given(json_values, st.booleans())
def test_random_json_documents(document: Any, ascii_only: bool) -> None:
    data = json.dumps(document, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
    parse_everything(parse_accepted(data))
    for decode in (DirectiveMessage.decode, StatusMessage.decode, PresenceMessage.decode):
        only_protocol_errors(decode, data)


@FUZZ
@given(json_text)
@example("[1e400]")
@example("[" + "9" * 4400 + "]")
@example('{"name":"\\ud800"}')
@example('{"\\udfff":1}')
def test_random_json_text(text: str) -> None:
    data = text.encode()
    parse_everything(parse_accepted(data))
    for decode in (DirectiveMessage.decode, StatusMessage.decode, PresenceMessage.decode):
        only_protocol_errors(decode, data)


@FUZZ
@given(st.text(max_size=80))
def test_random_topics_and_device_ids(text: str) -> None:
    only_protocol_errors(parse_topic, text)
    only_protocol_errors(parse_topic, f"edgefleet/v1/{text}/status")
    only_protocol_errors(validate_device_id, text)


# -- mutated valid documents -------------------------------------------------------


@FUZZ
@given(st.data())
def test_mutated_envelopes(data: st.DataObject) -> None:
    for document in (SCENE.root_document, SCENE.release_document, SCENE.directive_document):
        parse_everything(data.draw(mutated(document)))


@FUZZ
@given(mutated(SCENE.release.to_dict()))
def test_mutated_releases_signed_by_the_right_key(signed: dict[str, Any]) -> None:
    """Content that passes the signature check still meets only typed errors further on."""
    try:
        release_document = sign_envelope(signed, SCENE.keys.release).to_dict()
    except ProtocolError:
        return
    directive = copy.deepcopy(SCENE.directive.to_dict())
    directive["release"]["sha256"] = Envelope(release_document["signed"], ()).sha256()
    directive_document = sign_envelope(directive, SCENE.keys.rollout).to_dict()
    only_protocol_errors(verify_update, SCENE.root, directive_document, release_document, device(), 0, NOW)


@FUZZ
@given(mutated(SCENE.directive.to_dict()), st.integers(min_value=-5, max_value=2**53))
def test_mutated_directives_signed_by_the_right_key(signed: dict[str, Any], last_sequence: int) -> None:
    try:
        directive_document = sign_envelope(signed, SCENE.keys.rollout).to_dict()
    except ProtocolError:
        return
    only_protocol_errors(verify_update, SCENE.root, directive_document, SCENE.release_document, device(),
                         last_sequence, NOW)


@FUZZ
@given(mutated(make_root(SCENE.keys, version=2).to_dict()))
def test_mutated_root_rotations_signed_by_the_root_key(signed: dict[str, Any]) -> None:
    try:
        document = sign_envelope(signed, SCENE.keys.root).to_dict()
    except ProtocolError:
        return
    only_protocol_errors(verify_root_update, SCENE.root, document, NOW)
    only_protocol_errors(load_trusted_root, document, NOW)


@FUZZ
@given(st.data())
def test_flipped_bytes_in_a_directive_message(data: st.DataObject) -> None:
    payload = bytearray(DirectiveMessage(SCENE.directive_document, SCENE.release_document).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] ^= data.draw(st.integers(1, 255))
    try:
        message = DirectiveMessage.decode(bytes(payload))
    except ProtocolError:
        return
    only_protocol_errors(verify_update, SCENE.root, message.directive, message.release, device(), 0, NOW)


@FUZZ
@given(st.data())
def test_mutated_device_messages(data: st.DataObject) -> None:
    status = parse_json(StatusMessage("pi-1", "failed", 3, "digits", 2, "onnx-fp32", "boom", 1.5).encode())
    presence = parse_json(PresenceMessage("pi-1", True, "0.1.0", 2.0, (), "idle", 1.5).encode())
    for decode, body in ((StatusMessage.decode, status), (PresenceMessage.decode, presence)):
        mutant = data.draw(mutated(body))
        try:
            payload = canonical_bytes(mutant)
        except ProtocolError:
            continue
        only_protocol_errors(decode, payload)
