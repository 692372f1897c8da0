"""The update rules of ``agent.protocol.verify``: one test per rejection, each with its own error class."""

from dataclasses import replace
from datetime import timedelta

import pytest

from agent.protocol.canonical import canonical_sha256
from agent.protocol.errors import (
    ArtifactMismatchError,
    BadSignatureError,
    ExpiredError,
    InvalidDeviceIdError,
    MalformedDocumentError,
    NoCompatibleVariantError,
    ReleaseMismatchError,
    ReplayError,
    ThresholdNotMetError,
    UnknownSignerError,
    WrongDeviceError,
    WrongRoleError,
)
from agent.protocol.keys import generate_private_key
from agent.protocol.metadata import Action, ReleaseRef, Runtime
from agent.protocol.verify import (
    choose_variant,
    load_trusted_root,
    verify_artifact,
    verify_directive,
    verify_release,
    verify_update,
)
from tests.agent.protocol.factories import (
    ARTIFACT,
    DEVICE_ID,
    NOW,
    KeySet,
    Scenario,
    device,
    make_directive,
    make_release,
    make_variant,
    scenario,
    sign,
)


def verify(scene: Scenario, last_sequence: int = 0, **facts: object):
    directive_document, release_document = scene.documents()
    return verify_update(scene.root, directive_document, release_document, device(**facts), last_sequence, NOW)


# -- acceptance ----------------------------------------------------------------


def test_a_valid_install_yields_the_variant_to_fetch(scene: Scenario) -> None:
    update = verify(scene, last_sequence=6)
    assert update.directive == scene.directive
    assert update.release == scene.release
    assert update.variant == scene.release.variants[0]
    verify_artifact(update.variant, len(ARTIFACT), update.variant.sha256)


def test_a_rollback_verifies_without_choosing_a_variant(scene: Scenario) -> None:
    rollback = scene.with_release(scene.release, action=Action.ROLLBACK)
    assert verify(rollback, ram_mb=1).variant is None


def test_a_shadow_yields_the_variant_as_an_install_does(scene: Scenario) -> None:
    shadow = scene.with_release(scene.release, action=Action.SHADOW)
    assert verify(shadow).variant == scene.release.variants[0]
    with pytest.raises(NoCompatibleVariantError):
        verify(shadow, runtimes=())


def test_dropping_a_shadow_verifies_without_choosing_a_variant(scene: Scenario) -> None:
    assert verify(scene.with_release(scene.release, action=Action.DROP_SHADOW), ram_mb=1).variant is None


def test_the_trusted_root_loads(scene: Scenario) -> None:
    assert load_trusted_root(scene.root_document, NOW) == scene.root


# -- signers -------------------------------------------------------------------


def test_unknown_signer(scene: Scenario) -> None:
    stranger = scene.with_release(scene.release, release_keys=[generate_private_key()])
    with pytest.raises(UnknownSignerError):
        verify(stranger)


def test_unknown_signer_of_a_directive(scene: Scenario) -> None:
    directive_document = sign(scene.directive, [generate_private_key()]).to_dict()
    with pytest.raises(UnknownSignerError):
        verify_directive(scene.root, directive_document, DEVICE_ID, 0, NOW)


def test_signer_of_the_wrong_role(scene: Scenario) -> None:
    release_signed_by_rollout = scene.with_release(scene.release, release_keys=scene.keys.rollout)
    with pytest.raises(WrongRoleError):
        verify(release_signed_by_rollout)


def test_directive_signed_by_the_release_key_is_the_wrong_role(scene: Scenario) -> None:
    directive_document = sign(scene.directive, scene.keys.release).to_dict()
    with pytest.raises(WrongRoleError):
        verify_directive(scene.root, directive_document, DEVICE_ID, 0, NOW)


def test_root_key_cannot_sign_a_release(scene: Scenario) -> None:
    with pytest.raises(WrongRoleError):
        verify(scene.with_release(scene.release, release_keys=scene.keys.root))


def test_threshold_not_met_by_one_of_two_release_keys() -> None:
    scene = scenario(KeySet.generate(release=2), release_threshold=2)
    with pytest.raises(ThresholdNotMetError):
        verify(scene.with_release(scene.release, release_keys=scene.keys.release[:1]))


def test_threshold_counts_a_key_once_even_if_it_signed_twice() -> None:
    scene = scenario(KeySet.generate(release=2), release_threshold=2)
    twice = scene.keys.release[:1] * 2
    envelope = sign(scene.release, twice)
    assert len(envelope.signatures) == 2 and envelope.signatures[0] == envelope.signatures[1]
    with pytest.raises(ThresholdNotMetError):
        verify(scene.with_release(scene.release, release_keys=twice))


def test_threshold_met_by_two_distinct_release_keys() -> None:
    scene = scenario(KeySet.generate(release=2), release_threshold=2)
    assert verify(scene.with_release(scene.release, release_keys=scene.keys.release)).variant is not None


def test_threshold_ignores_signatures_of_other_roles() -> None:
    scene = scenario(KeySet.generate(release=2), release_threshold=2)
    mixed = [scene.keys.release[0], scene.keys.rollout[0], scene.keys.root[0]]
    with pytest.raises(ThresholdNotMetError):
        verify(scene.with_release(scene.release, release_keys=mixed))


# -- tampering -----------------------------------------------------------------


@pytest.mark.parametrize("change", [
    lambda release: release["variants"][0].update(sha256="0" * 64),
    lambda release: release["variants"][0].update(length=1),
    lambda release: release["variants"][0]["compatibility"].update(min_ram_mb=1),
    lambda release: release.update(version=4),
    lambda release: release.update(expires="2099-01-01T00:00:00Z"),
    lambda release: release["inputs"][0].update(name="other"),
    lambda release: release.update(reference_profile_sha256=None),
], ids=["sha256", "length", "compatibility", "version", "expires", "schema", "profile"])
def test_any_release_field_changed_after_signing(scene: Scenario, change) -> None:
    release_document = scene.documents()[1]
    change(release_document["signed"])
    with pytest.raises(BadSignatureError):
        verify_release(scene.root, release_document, NOW)


@pytest.mark.parametrize("field, value", [
    ("device_id", "pi-garage-02"), ("sequence", 8), ("action", "rollback"), ("expires", "2099-01-01T00:00:00Z"),
])
def test_any_directive_field_changed_after_signing(scene: Scenario, field: str, value: object) -> None:
    directive_document = scene.documents()[0]
    directive_document["signed"][field] = value
    with pytest.raises(BadSignatureError):
        verify_directive(scene.root, directive_document, DEVICE_ID, 0, NOW)


def test_a_corrupted_signature(scene: Scenario) -> None:
    directive_document = scene.documents()[0]
    signature = directive_document["signatures"][0]["sig"]
    directive_document["signatures"][0]["sig"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    with pytest.raises(BadSignatureError):
        verify_directive(scene.root, directive_document, DEVICE_ID, 0, NOW)


def test_a_signature_that_is_not_hex(scene: Scenario) -> None:
    directive_document = scene.documents()[0]
    directive_document["signatures"][0]["sig"] = "not hex at all"
    with pytest.raises(BadSignatureError):
        verify_directive(scene.root, directive_document, DEVICE_ID, 0, NOW)


def test_a_bad_signature_is_not_outvoted_by_a_good_one() -> None:
    scene = scenario(KeySet.generate(release=2), release_threshold=1)
    release_document = sign(scene.release, scene.keys.release).to_dict()
    release_document["signatures"][1]["sig"] = release_document["signatures"][0]["sig"]
    with pytest.raises(BadSignatureError):
        verify_release(scene.root, release_document, NOW)


# -- expiry --------------------------------------------------------------------


def test_expired_root(scene: Scenario) -> None:
    with pytest.raises(ExpiredError):
        load_trusted_root(scene.root_document, scene.root.expires)


def test_expired_release(scene: Scenario) -> None:
    expired = scene.with_release(make_release(expires=NOW - timedelta(seconds=1)))
    with pytest.raises(ExpiredError):
        verify(expired)


def test_expired_directive(scene: Scenario) -> None:
    expired = scene.with_release(scene.release, expires=NOW)
    with pytest.raises(ExpiredError):
        verify(expired)


def test_metadata_is_valid_until_its_expiry(scene: Scenario) -> None:
    load_trusted_root(scene.root_document, scene.root.expires - timedelta(seconds=1))
    verify_release(scene.root, scene.release_document, scene.release.expires - timedelta(seconds=1))


# -- directive rules -------------------------------------------------------------


def test_directive_for_another_device(scene: Scenario) -> None:
    other = scene.with_release(scene.release, device_id="pi-garage-02")
    with pytest.raises(WrongDeviceError):
        verify(other)


@pytest.mark.parametrize("last_sequence", [7, 8, 1000])
def test_sequence_not_above_the_last_accepted_is_a_replay(scene: Scenario, last_sequence: int) -> None:
    with pytest.raises(ReplayError):
        verify(scene, last_sequence=last_sequence)


def test_sequence_just_above_the_last_accepted_is_fresh(scene: Scenario) -> None:
    assert verify(scene, last_sequence=6).directive.sequence == 7


# -- release reference -----------------------------------------------------------


def test_release_sha256_not_matching_the_reference(scene: Scenario) -> None:
    mismatched = scene.with_release(scene.release, release=ReleaseRef(scene.release.name, scene.release.version,
                                                                       "ab" * 32))
    with pytest.raises(ReleaseMismatchError):
        verify(mismatched)


def test_directive_for_another_release_version(scene: Scenario) -> None:
    newer = make_release(version=4)
    envelope = sign(newer, scene.keys.release)
    directive = make_directive(envelope, newer)
    directive_document = sign(directive, scene.keys.rollout).to_dict()
    with pytest.raises(ReleaseMismatchError):
        verify_update(scene.root, directive_document, scene.documents()[1], device(), 0, NOW)


def test_release_reference_covers_the_signatures_too(scene: Scenario) -> None:
    """Re-signing the same release changes nothing signed, but the reference names the exact envelope."""
    release_document = scene.documents()[1]
    assert canonical_sha256(release_document) == scene.directive.release.sha256
    resigned = sign(scene.release, [*scene.keys.release, *scene.keys.rollout]).to_dict()
    with pytest.raises(ReleaseMismatchError):
        verify_update(scene.root, scene.documents()[0], resigned, device(), 0, NOW)


# -- variants --------------------------------------------------------------------


def two_variant_scene(scene: Scenario) -> Scenario:
    release = make_release(variants=(
        make_variant("tflite-int8", Runtime.TFLITE, arch=("aarch64", "armv7l"), min_ram_mb=512),
        make_variant("onnx-fp32", Runtime.ONNXRUNTIME, arch=("x86_64", "aarch64"), min_ram_mb=2048),
    ))
    return scene.with_release(release)


@pytest.mark.parametrize("facts", [
    {"arch": "riscv64"},
    {"ram_mb": 256},
    {"runtimes": ("tensorrt",)},
    {"arch": "x86_64", "runtimes": ("tflite",)},
], ids=["arch", "ram", "runtime", "arch-and-runtime"])
def test_no_compatible_variant(scene: Scenario, facts: dict[str, object]) -> None:
    with pytest.raises(NoCompatibleVariantError):
        verify(two_variant_scene(scene), **facts)


@pytest.mark.parametrize("facts, chosen", [
    ({}, "tflite-int8"),
    ({"runtimes": ("onnxruntime",), "ram_mb": 4096}, "onnx-fp32"),
    ({"arch": "x86_64", "ram_mb": 4096}, "onnx-fp32"),
    ({"arch": "armv7l", "ram_mb": 512}, "tflite-int8"),
])
def test_the_first_fitting_variant_is_chosen(scene: Scenario, facts: dict[str, object], chosen: str) -> None:
    release = two_variant_scene(scene).release
    assert choose_variant(release, device(**facts)).name == chosen


def test_artifact_bytes_must_match_the_signed_length_and_hash(scene: Scenario) -> None:
    variant = scene.release.variants[0]
    with pytest.raises(ArtifactMismatchError):
        verify_artifact(variant, variant.length + 1, variant.sha256)
    with pytest.raises(ArtifactMismatchError):
        verify_artifact(variant, variant.length, "0" * 64)


# -- document kinds ---------------------------------------------------------------


def test_a_release_presented_as_a_directive_is_malformed(scene: Scenario) -> None:
    with pytest.raises(MalformedDocumentError):
        verify_update(scene.root, scene.documents()[1], scene.documents()[1], device(), 0, NOW)


def test_a_signed_directive_naming_an_invalid_device_id(scene: Scenario) -> None:
    directive = replace(scene.directive, device_id="Not Valid")
    with pytest.raises(InvalidDeviceIdError):
        verify_directive(scene.root, sign(directive, scene.keys.rollout).to_dict(), DEVICE_ID, 0, NOW)
