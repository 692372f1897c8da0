"""Root, release and directive documents: exact round trips and strict parsing."""

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from agent.protocol.canonical import canonical_bytes, parse_json
from agent.protocol.envelope import Envelope
from agent.protocol.errors import MalformedDocumentError, UnsafePathError
from agent.protocol.keys import generate_private_key, key_id, public_key_hex
from agent.protocol.metadata import (
    ArtifactVariant,
    Compatibility,
    Directive,
    Release,
    ReleaseRef,
    RoleSpec,
    Root,
    TensorSpec,
)
from tests.agent.protocol.factories import KeySet, Scenario, make_root, make_variant, scenario, sign


def through_the_wire(document: dict[str, Any]) -> Any:
    return parse_json(canonical_bytes(document))


# -- round trips ---------------------------------------------------------------


def test_root_round_trip(scene: Scenario) -> None:
    assert Root.from_dict(through_the_wire(scene.root.to_dict())) == scene.root


def test_root_with_several_keys_per_role_round_trips() -> None:
    root = make_root(KeySet.generate(root=3, release=2, rollout=2), version=9, root_threshold=2,
                     release_threshold=2)
    assert Root.from_dict(through_the_wire(root.to_dict())) == root


def test_release_round_trip(scene: Scenario) -> None:
    assert Release.from_dict(through_the_wire(scene.release.to_dict())) == scene.release


def test_release_without_reference_profile_round_trips(scene: Scenario) -> None:
    release = replace(scene.release, reference_profile_sha256=None)
    assert Release.from_dict(through_the_wire(release.to_dict())) == release


def test_directive_round_trip(scene: Scenario) -> None:
    assert Directive.from_dict(through_the_wire(scene.directive.to_dict())) == scene.directive


def test_parts_round_trip() -> None:
    variant = make_variant(arch=("aarch64",), min_ram_mb=512)
    assert ArtifactVariant.from_dict(through_the_wire(variant.to_dict()), "v") == variant
    assert Compatibility.from_dict(through_the_wire(Compatibility().to_dict()), "c") == Compatibility()
    spec = TensorSpec("input", "float32", (None, 3, 224, 224))
    assert TensorSpec.from_dict(through_the_wire(spec.to_dict()), "t") == spec
    ref = ReleaseRef("digits", 2, "ab" * 32)
    assert ReleaseRef.from_dict(through_the_wire(ref.to_dict()), "r") == ref
    role = RoleSpec(("cd" * 32, "ef" * 32), 2)
    assert RoleSpec.from_dict(through_the_wire(role.to_dict()), "r") == role


def test_envelope_round_trip_and_hash(scene: Scenario) -> None:
    envelope = sign(scene.release, scene.keys.release)
    parsed = Envelope.from_dict(through_the_wire(envelope.to_dict()))
    assert parsed == envelope
    assert parsed.sha256() == envelope.sha256() == scene.directive.release.sha256


# -- malformed documents -------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def set_path(path: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


def drop(path: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]
    return mutate


RELEASE_MUTATIONS: dict[str, Mutation] = {
    "missing name": drop("name"),
    "missing variants": drop("variants"),
    "missing variant sha256": drop("variants.0.sha256"),
    "missing compatibility": drop("variants.0.compatibility"),
    "unknown top-level field": set_path("signed_by", "me"),
    "unknown variant field": set_path("variants.0.url", "http://example.invalid/x"),
    "version as string": set_path("version", "3"),
    "version as float": set_path("version", 3.0),
    "version as bool": set_path("version", True),
    "version zero": set_path("version", 0),
    "version negative": set_path("version", -1),
    "version huge": set_path("version", 2**53),
    "length negative": set_path("variants.0.length", -5),
    "length huge": set_path("variants.0.length", 10**30),
    "min_ram negative": set_path("variants.0.compatibility.min_ram_mb", -1),
    "arch not a list": set_path("variants.0.compatibility.arch", "aarch64"),
    "arch with a number": set_path("variants.0.compatibility.arch", [64]),
    "sha256 uppercase": set_path("variants.0.sha256", "AB" * 32),
    "sha256 short": set_path("variants.0.sha256", "ab" * 31),
    "runtime unknown": set_path("variants.0.runtime", "tensorrt"),
    "runtime as list": set_path("variants.0.runtime", ["onnxruntime"]),
    "no variants": set_path("variants", []),
    "variants not a list": set_path("variants", {"a": 1}),
    "variant not an object": set_path("variants", ["onnx"]),
    "name with a slash": set_path("name", "a/b"),
    "empty name": set_path("name", ""),
    "name too long": set_path("name", "a" * 200),
    "shape negative": set_path("inputs.0.shape", [-1, 64]),
    "shape as string": set_path("inputs.0.shape", "[1, 64]"),
    "expires in another format": set_path("expires", "2026-06-01 12:00:00"),
    "expires as number": set_path("expires", 1780000000),
    "wrong _type": set_path("_type", "directive"),
    "future spec_version": set_path("spec_version", 2),
    "profile hash as number": set_path("reference_profile_sha256", 12),
}


@pytest.mark.parametrize("mutation", RELEASE_MUTATIONS.values(), ids=RELEASE_MUTATIONS.keys())
def test_malformed_release(scene: Scenario, mutation: Mutation) -> None:
    document = copy.deepcopy(scene.release.to_dict())
    mutation(document)
    with pytest.raises(MalformedDocumentError):
        Release.from_dict(document)


def test_duplicate_variant_names(scene: Scenario) -> None:
    document = scene.release.to_dict()
    document["variants"].append(copy.deepcopy(document["variants"][0]))
    with pytest.raises(MalformedDocumentError, match="unique"):
        Release.from_dict(document)


@pytest.mark.parametrize("path", ["../x", "/abs", "/etc/passwd", "a/../b", "a\\b", "..\\x", "./a", ".", "a//b",
                                  "a/", ".hidden", "a/./b", "C:\\model.onnx"])
def test_unsafe_artifact_paths(scene: Scenario, path: str) -> None:
    document = scene.release.to_dict()
    document["variants"][0]["path"] = path
    with pytest.raises(UnsafePathError):
        Release.from_dict(document)


@pytest.mark.parametrize("path", ["model.onnx", "int8/model.tflite", "v2_model-final.onnx"])
def test_safe_artifact_paths(scene: Scenario, path: str) -> None:
    document = scene.release.to_dict()
    document["variants"][0]["path"] = path
    assert Release.from_dict(document).variants[0].path == path


DIRECTIVE_MUTATIONS: dict[str, Mutation] = {
    "missing device": drop("device_id"),
    "missing release": drop("release"),
    "missing sequence": drop("sequence"),
    "unknown field": set_path("priority", 1),
    "unknown release field": set_path("release.url", "x"),
    "sequence zero": set_path("sequence", 0),
    "sequence negative": set_path("sequence", -7),
    "sequence huge": set_path("sequence", 2**64),
    "sequence as string": set_path("sequence", "7"),
    "action unknown": set_path("action", "shadow-install"),
    "device upper case": set_path("device_id", "Pi-Kitchen"),
    "device with a wildcard": set_path("device_id", "pi+1"),
    "device with a slash": set_path("device_id", "pi/1"),
    "device as number": set_path("device_id", 1),
    "release ref sha256 short": set_path("release.sha256", "ab"),
    "release ref version zero": set_path("release.version", 0),
    "release not an object": set_path("release", "digits@3"),
    "issued as number": set_path("issued", 0),
}


@pytest.mark.parametrize("mutation", DIRECTIVE_MUTATIONS.values(), ids=DIRECTIVE_MUTATIONS.keys())
def test_malformed_directive(scene: Scenario, mutation: Mutation) -> None:
    document = copy.deepcopy(scene.directive.to_dict())
    mutation(document)
    with pytest.raises(MalformedDocumentError):
        Directive.from_dict(document)


ROOT_MUTATIONS: dict[str, Mutation] = {
    "missing roles": drop("roles"),
    "missing keys": drop("keys"),
    "missing rollout role": drop("roles.rollout"),
    "extra role": set_path("roles.admin", {"keyids": [], "threshold": 1}),
    "unknown field": set_path("consistent_snapshot", True),
    "threshold zero": set_path("roles.release.threshold", 0),
    "threshold above key count": set_path("roles.release.threshold", 2),
    "threshold as string": set_path("roles.release.threshold", "1"),
    "keyids not a list": set_path("roles.release.keyids", "abc"),
    "keyid not hex": set_path("roles.release.keyids", ["zz" * 32]),
    "role names an unknown key": set_path("roles.release.keyids", ["00" * 32]),
    "version zero": set_path("version", 0),
    "version huge": set_path("version", 2**60),
    "keys not an object": set_path("keys", []),
    "wrong _type": set_path("_type", "release"),
}


@pytest.mark.parametrize("mutation", ROOT_MUTATIONS.values(), ids=ROOT_MUTATIONS.keys())
def test_malformed_root(scene: Scenario, mutation: Mutation) -> None:
    document = copy.deepcopy(scene.root.to_dict())
    mutation(document)
    with pytest.raises(MalformedDocumentError):
        Root.from_dict(document)


def test_root_key_entries_are_strict(scene: Scenario) -> None:
    keyid = next(iter(scene.root.keys))
    for entry in ({"keytype": "rsa", "public": scene.root.keys[keyid]}, {"keytype": "ed25519"},
                  {"keytype": "ed25519", "public": "ab"}, "not an object",
                  {"keytype": "ed25519", "public": scene.root.keys[keyid], "private": "x"}):
        document = scene.root.to_dict()
        document["keys"][keyid] = entry
        with pytest.raises(MalformedDocumentError):
            Root.from_dict(document)


def test_role_listing_a_key_twice(scene: Scenario) -> None:
    document = scene.root.to_dict()
    keyid = document["roles"]["release"]["keyids"][0]
    document["roles"]["release"]["keyids"] = [keyid, keyid]
    with pytest.raises(MalformedDocumentError, match="twice"):
        Root.from_dict(document)


def test_a_key_id_must_be_the_hash_of_its_public_key(scene: Scenario) -> None:
    """Otherwise one key listed under two ids would count twice towards a threshold."""
    key = generate_private_key()
    alias = "0" * 63 + "1"
    document = scene.root.to_dict()
    document["keys"][alias] = {"keytype": "ed25519", "public": public_key_hex(key)}
    document["keys"][key_id(key)] = {"keytype": "ed25519", "public": public_key_hex(key)}
    document["roles"]["release"] = {"keyids": [key_id(key), alias], "threshold": 2}
    with pytest.raises(MalformedDocumentError, match="key id"):
        Root.from_dict(document)


@pytest.mark.parametrize("document", [None, [], "root", 1, {"signed": {}, "signatures": []}])
def test_documents_that_are_not_objects_of_the_type(document: Any) -> None:
    for parse in (Root.from_dict, Release.from_dict, Directive.from_dict):
        with pytest.raises(MalformedDocumentError):
            parse(document)


ENVELOPE_MUTATIONS: dict[str, Mutation] = {
    "missing signatures": drop("signatures"),
    "missing signed": drop("signed"),
    "signed not an object": set_path("signed", "x"),
    "signatures not a list": set_path("signatures", {}),
    "signature not an object": set_path("signatures", ["ab"]),
    "signature without keyid": drop("signatures.0.keyid"),
    "signature with extra field": set_path("signatures.0.method", "ed25519"),
    "keyid not hex": set_path("signatures.0.keyid", "k1"),
    "sig as number": set_path("signatures.0.sig", 5),
    "sig too long": set_path("signatures.0.sig", "ab" * 200),
    "unknown field": set_path("version", 1),
    "too many signatures": set_path("signatures", [{"keyid": "ab" * 32, "sig": "00"}] * 65),
}


@pytest.mark.parametrize("mutation", ENVELOPE_MUTATIONS.values(), ids=ENVELOPE_MUTATIONS.keys())
def test_malformed_envelope(scene: Scenario, mutation: Mutation) -> None:
    document = copy.deepcopy(scene.release_document)
    mutation(document)
    with pytest.raises(MalformedDocumentError):
        Envelope.from_dict(document)


def test_scenario_documents_are_canonical_json() -> None:
    scene = scenario()
    for document in (scene.root_document, scene.release_document, scene.directive_document):
        assert parse_json(canonical_bytes(document)) == document
